"""DSPy's LM layer on top of `RoleClient`, so DSPy calls share our limits and accounting.

`dspy.LM(engine=RoleEngine(client))` keeps DSPy's cache, history and adapters, and sends
each request through the role's client (one attempt per DSPy call; the client retries).
JSON output schemas arrive in DSPy's canonical `{"type": "json_schema", "schema": ...}`
and leave in the endpoint's own dialect (llama.cpp wants `json_object` + `schema`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")  # else importing dspy stalls on network retries

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from autodata.errors import AutodataError
from autodata.llm.client import RoleClient


@contextmanager
def our_errors() -> Iterator[None]:
    """Re-raise autodata's own errors (budget spent, endpoint down) that DSPy wrapped.

    DSPy turns any exception from an engine into its own `LMUnexpectedError`; callers
    should see `BudgetExceeded` or `EndpointError` with their messages instead.
    """
    try:
        yield
    except Exception as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, AutodataError):
            cause = cause.__cause__
        if cause is not None and not isinstance(err, AutodataError):
            raise cause from None
        raise


class RoleEngine:
    """A DSPy engine (complete(Request) -> Response) backed by one role's client."""

    def __init__(self, client: RoleClient):
        self.client = client

    def complete(self, request) -> Response:
        messages = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        config = request.config
        sampling = {
            name: value
            for name, value in (
                ("temperature", config.temperature),
                ("top_p", config.top_p),
                ("max_tokens", config.max_tokens),
                ("seed", config.seed),
            )
            if value is not None
        }
        schema = (config.response_format or {}).get("schema")
        completion = self.client.chat(messages, stop=list(config.stop) or None, json_schema=schema, **sampling)
        finish = completion.finish_reason if completion.finish_reason in ("stop", "length") else "stop"
        return Response(
            id=None,
            model=self.client.endpoint.model,
            message=Message.assistant([TextPart(completion.text)]),
            finish_reason=finish,
            usage=Usage(
                input_tokens=completion.prompt_tokens,
                output_tokens=completion.completion_tokens,
                total_tokens=completion.prompt_tokens + completion.completion_tokens,
            ),
        )

    def stream(self, request):
        raise NotImplementedError("autodata's role engines do not stream")

    def close(self) -> None:
        pass


def role_lm(client: RoleClient, *, cache: bool) -> dspy.LM:
    """A `dspy.LM` for one role; DSPy retries nothing (the client does)."""
    e = client.endpoint
    return dspy.LM(
        f"autodata/{client.role}",
        engine=RoleEngine(client),
        cache=cache,
        num_retries=0,
        temperature=e.temperature,
        max_tokens=e.max_tokens,
    )


def configure_dspy_cache(cache_dir, *, enabled: bool) -> None:
    """DSPy's disk cache under autodata's home, so re-runs reuse answers."""
    dspy.configure_cache(enable_disk_cache=enabled, enable_memory_cache=enabled, disk_cache_dir=str(cache_dir))


def int_seed(text: str) -> int:
    """A stable 31-bit number from `text`: sampling seeds and the strategy draws."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def call_config(rollout_id: str) -> dict:
    """A DSPy call's config: `rollout_id` (the LLM cache's key) and the sampling seed it fixes."""
    return {"rollout_id": rollout_id, "seed": int_seed(rollout_id)}
