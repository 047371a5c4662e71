"""One role's client for its OpenAI-compatible endpoint: limits, retries and accounting.

Every LLM call in autodata, raw completions and DSPy predictions alike, goes through
`RoleClient._request`, so the adaptive concurrency limit, the retry policy, the usage
ledger and the budget apply to all of them.

An endpoint slot is held only while the request is on the wire: the body is encoded
before the slot is taken and the reply decoded after it is given back, and requests go
through the OpenAI client's low-level `post` (its error types and connection pool)
without its per-call TypedDict transform, over a third of each request's CPU in the
SDK (`bench.synthesis --profile`). With many threads sharing the GIL, CPU
spent inside the slot is slot time the endpoint sits idle.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from autodata.errors import EndpointError
from autodata.llm.limiter import AdaptiveLimiter
from autodata.llm.usage import UsageLedger
from autodata.settings import EndpointSettings

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
CONNECT_RETRIES = 1  # a refused connection is a wrong URL far more often than a blip: fail fast


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class RoleClient:
    """Chat and text completions for one role.

    Args:
        role: the role's name, used in accounting and in every error message.
        endpoint: the role's settings (base URL, model, sampling defaults, limits).
        api_key: the key read from `endpoint.api_key_env`, or a placeholder.
        limiter: shared by all roles that use the same endpoint.
        ledger: the job's usage ledger (and budget).
    """

    def __init__(
        self,
        role: str,
        endpoint: EndpointSettings,
        *,
        base_url: str,
        api_key: str,
        limiter: AdaptiveLimiter,
        ledger: UsageLedger,
        backoff_s: float = 0.5,
    ):
        self.role = role
        self.endpoint = endpoint
        self.base_url = base_url
        self.limiter = limiter
        self.ledger = ledger
        self.backoff_s = backoff_s
        self._openai = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=endpoint.timeout_s)

    def close(self) -> None:
        self._openai.close()

    def _sampling(self, overrides: dict[str, Any]) -> dict[str, Any]:
        e = self.endpoint
        return {"temperature": e.temperature, "top_p": e.top_p, "max_tokens": e.max_tokens, **overrides}

    def response_format(self, json_schema: dict) -> dict:
        """The request field that constrains output to `json_schema`, in this endpoint's dialect."""
        if self.endpoint.json_mode == "json_object":
            return {"type": "json_object", "schema": json_schema}
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": json_schema, "strict": False}}

    def chat(
        self, messages: list[dict], *, stop: list[str] | None = None, json_schema: dict | None = None, **sampling
    ) -> Completion:
        """One chat completion. `json_schema` constrains the reply to that JSON schema."""
        payload = {"model": self.endpoint.model, "messages": messages, **self._sampling(sampling)}
        if stop:
            payload["stop"] = stop
        if json_schema is not None:
            payload["response_format"] = self.response_format(json_schema)
        reply = self._request("/chat/completions", payload)
        choice = reply["choices"][0]
        return _completion((choice.get("message") or {}).get("content") or "", choice.get("finish_reason"), reply)

    def complete(self, prompt: str, *, stop: list[str] | None = None, **sampling) -> Completion:
        """One raw text completion (the search agent's loop stops at `</search>`)."""
        payload = {"model": self.endpoint.model, "prompt": prompt, **self._sampling(sampling)}
        if stop:
            payload["stop"] = stop
        reply = self._request("/completions", payload)
        choice = reply["choices"][0]
        return _completion(choice.get("text") or "", choice.get("finish_reason"), reply)

    def _request(self, path: str, payload: dict) -> dict:
        """POST `payload` to the endpoint's `path`; the decoded JSON reply, after retries."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        options = {"headers": {"Content-Type": "application/json"}}
        started = time.monotonic()
        attempt = 0
        while True:
            self.ledger.check_budget()
            generation = None
            try:
                with self.limiter.slot() as generation:
                    response = self._openai.post(path, content=body, options=options, cast_to=httpx.Response)
            except openai.RateLimitError as err:
                self.limiter.on_rate_limited(generation)
                retry_after = _retry_after_s(err.response)
                if not self._may_retry(attempt, self.endpoint.max_retries, err):
                    raise self._fail(f"kept answering HTTP 429 (rate limited) after {attempt + 1} attempts") from err
            except (openai.InternalServerError, openai.APITimeoutError) as err:
                retry_after = None
                if not self._may_retry(attempt, self.endpoint.max_retries, err):
                    raise self._fail(f"kept failing after {attempt + 1} attempts: {_describe(err)}") from err
            except openai.APIConnectionError as err:
                retry_after = None
                if not self._may_retry(attempt, min(CONNECT_RETRIES, self.endpoint.max_retries), err):
                    raise self._fail(f"is unreachable ({_describe(err)}); check `roles.{self.role}.base_url`") from err
            except openai.NotFoundError as err:
                raise self._fail(
                    f"answered HTTP 404: {_describe(err)}. Check `roles.{self.role}.model` "
                    f"(now {self.endpoint.model!r}) and that the base URL ends in /v1"
                ) from err
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise self._fail(
                    f"refused the API key (HTTP {err.status_code}): {_describe(err)}. "
                    f"Set the variable named by `roles.{self.role}.api_key_env` (now {self.endpoint.api_key_env!r})"
                ) from err
            except openai.APIStatusError as err:
                raise self._fail(f"rejected the request (HTTP {err.status_code}): {_describe(err)}") from err
            else:
                self.limiter.on_success()
                reply = _decode(response)
                prompt_tokens, completion_tokens = _tokens(reply)
                self.ledger.record_success(
                    self.role,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    latency_s=time.monotonic() - started,
                )
                return reply
            self.ledger.record_retry(self.role)
            delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt * (0.5 + random.random())
            time.sleep(min(delay, MAX_BACKOFF_S))
            attempt += 1

    def _may_retry(self, attempt: int, max_retries: int, err: Exception) -> bool:
        if attempt < max_retries:
            logger.info("role %s: %s; retrying (attempt %d)", self.role, _describe(err), attempt + 2)
            return True
        return False

    def _fail(self, what: str) -> EndpointError:
        self.ledger.record_error(self.role)
        return EndpointError(f"Role {self.role!r}: endpoint {self.base_url} (model {self.endpoint.model!r}) {what}.")


def _decode(response: httpx.Response) -> dict:
    try:
        reply = response.json()
    except ValueError as err:
        raise EndpointError(
            f"Endpoint {response.request.url} answered HTTP {response.status_code} with a body "
            f"that is not JSON: {response.text[:200]!r}"
        ) from err
    if not isinstance(reply, dict) or not reply.get("choices"):
        raise EndpointError(f"Endpoint {response.request.url} answered without choices: {response.text[:200]!r}")
    return reply


def _tokens(reply: dict) -> tuple[int, int]:
    """Prompt and completion tokens of a reply (0 where the endpoint does not say)."""
    usage = reply.get("usage") or {}
    return usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0


def _completion(text: str, finish_reason: str | None, reply: dict) -> Completion:
    prompt_tokens, completion_tokens = _tokens(reply)
    return Completion(
        text=text, finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def _describe(err: Exception) -> str:
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    return message.strip()[:300]


def _retry_after_s(response) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
