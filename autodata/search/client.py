"""The one HTTP client for Search-R1 compatible retrievers (ours or anyone's)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

import httpx
from pydantic import ValidationError

from autodata.errors import SearchUnavailable
from autodata.search.protocol import Hit, SearchRequest, SearchResponse

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


def retrieve_url(base_url: str) -> str:
    """Accept `http://host:8000` as well as the full `http://host:8000/retrieve`."""
    base_url = base_url.rstrip("/")
    return base_url if base_url.endswith("/retrieve") else base_url + "/retrieve"


class SearchClient:
    """Talk to a retriever server; implements the `Retriever` protocol.

    Queries are sent in batches of `batch_size` per request over one pooled
    connection. Connection errors, timeouts, 429 and 5xx answers are retried with
    jittered exponential backoff; after `max_retries` the call raises
    `SearchUnavailable` naming the URL.

    Example:
        >>> with SearchClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
        ...     hits = client.search(["who wrote hamlet"], topk=3)
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        batch_size: int = 32,
        backoff_s: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = retrieve_url(base_url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.backoff_s = backoff_s
        self._http = httpx.Client(timeout=timeout_s, transport=transport)

    def __reduce__(self):
        """Pickled as its settings (a fresh connection pool where it lands, e.g. a Ray worker)."""
        return (
            type(self),
            (self.url,),
            {
                "timeout_s": self.timeout_s,
                "max_retries": self.max_retries,
                "batch_size": self.batch_size,
                "backoff_s": self.backoff_s,
            },
        )

    def __setstate__(self, settings: dict) -> None:
        self.__init__(self.url, **settings)

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.batch_size):
            batch = list(queries[start : start + self.batch_size])
            results.extend(self._search_batch(batch, topk))
        return results

    def health(self) -> dict:
        """GET /health of an autodata server (other Search-R1 servers may lack it)."""
        url = self.url.removesuffix("/retrieve") + "/health"
        try:
            response = self._http.get(url)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as err:
            raise SearchUnavailable(f"Retriever health check at {url} failed: {err}") from err

    def _search_batch(self, queries: list[str], topk: int) -> list[list[Hit]]:
        payload = SearchRequest(queries=queries, topk=topk, return_scores=True).model_dump()
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.post(self.url, json=payload)
                if response.status_code in _RETRYABLE_STATUS and attempt < self.max_retries:
                    raise _Retry(f"HTTP {response.status_code}")
                response.raise_for_status()
                hits = SearchResponse.model_validate_json(response.content).hits()
                break
            except (_Retry, httpx.TransportError) as err:
                if attempt == self.max_retries:
                    raise SearchUnavailable(
                        f"Retriever at {self.url} is unreachable after {attempt + 1} attempts: {err}. "
                        "Start one with `autodata retriever serve`, or unset AUTODATA_RETRIEVER__URL "
                        "to search the local index in-process."
                    ) from err
                delay = self.backoff_s * 2**attempt * (0.5 + random.random())
                logger.warning("retriever %s: %s; retrying in %.2fs", self.url, err, delay)
                time.sleep(delay)
            except httpx.HTTPStatusError as err:
                raise SearchUnavailable(
                    f"Retriever at {self.url} answered HTTP {err.response.status_code}: {err.response.text[:300]}"
                ) from err
            except ValidationError as err:
                raise SearchUnavailable(
                    f"Retriever at {self.url} answered something that is not a Search-R1 response: {err}"
                ) from err
        if len(hits) != len(queries):
            raise SearchUnavailable(
                f"Retriever at {self.url} answered {len(hits)} result lists for {len(queries)} queries."
            )
        return hits


class _Retry(Exception):
    """A retryable answer (429/5xx), handled inside `_search_batch`."""
