"""Search: the Search-R1 protocol, an embedded BM25 index, its server and one client."""

from __future__ import annotations

from autodata.search.bm25 import BM25Index, read_corpus
from autodata.search.client import SearchClient
from autodata.search.protocol import Hit, Retriever, format_hits

__all__ = ["BM25Index", "Hit", "Retriever", "SearchClient", "format_hits", "open_retriever", "read_corpus"]


def open_retriever(settings, *, url: str | None = None, index_dir=None) -> Retriever:
    """The retriever to search: `settings.url` or else `url` (a Search-R1 server), else the index at
    `settings.index_dir` or else `index_dir`. `settings` is a `RetrieverSettings`."""
    url = settings.url or (None if settings.index_dir else url)
    if url:
        return SearchClient(
            url, timeout_s=settings.timeout_s, max_retries=settings.max_retries, batch_size=settings.batch_size
        )
    return BM25Index.load((settings.index_dir or index_dir).expanduser())
