"""`LLMSession`: every LLM call of one job, role by role."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from autodata.llm.client import RoleClient
from autodata.llm.embedded import EmbeddedServer, locate_gguf
from autodata.llm.limiter import AdaptiveLimiter
from autodata.llm.usage import Budget, UsageLedger
from autodata.settings import ROLE_NAMES, RoleName, Settings

if TYPE_CHECKING:
    import dspy

logger = logging.getLogger(__name__)


class LLMSession:
    """Which model plays which role, for one job, inside a `with` block.

    Roles with a `base_url` use that endpoint; the others share the embedded model,
    started on first use and stopped when the block ends (also on Ctrl-C or an error).
    Roles sharing an endpoint share its adaptive concurrency limit. `usage` holds the
    job's accounting; `budget` stops the job with `BudgetExceeded` when spent.

    Example:
        >>> with LLMSession(load_settings()) as llms:  # doctest: +SKIP
        ...     llms.client("weak").chat([{"role": "user", "content": "Capital of France?"}]).text
        ...     with dspy.context(lm=llms.dspy_lm("challenger")):
        ...         ...
    """

    def __init__(
        self,
        settings: Settings,
        *,
        budget: Budget = Budget(),
        cache: bool | None = None,
        limiters: dict[str, AdaptiveLimiter] | None = None,
    ):
        """`limiters`: per base URL, a limiter to use instead of a new one (e.g. one shared by Ray workers)."""
        self.settings = settings
        self.cache = settings.llm_cache if cache is None else cache
        self.usage = UsageLedger(budget)
        self._clients: dict[str, RoleClient] = {}
        self._lms: dict[str, dspy.LM] = {}
        self._limiters: dict[str, AdaptiveLimiter] = dict(limiters or {})
        self._embedded: EmbeddedServer | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> LLMSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    @property
    def embedded_server(self) -> EmbeddedServer | None:
        return self._embedded

    def base_url(self, role: RoleName) -> str:
        """The role's endpoint URL; starts the embedded model if the role uses it."""
        configured = self.settings.endpoint(role).base_url
        return configured or self._embedded_base_url()

    def _embedded_base_url(self) -> str:
        with self._lock:
            if self._embedded is None:
                home = self.settings.home_dir
                gguf = locate_gguf(self.settings.embedded, self.settings.cache_dir)
                server = EmbeddedServer(gguf, self.settings.embedded, log_file=home / "logs" / "embedded-llm.log")
                self._embedded = server.start()
            return self._embedded.base_url

    def check_reachable(self, roles: tuple[RoleName, ...]) -> None:
        """Fail now, naming the role, if an endpoint does not answer (starts the embedded model if used)."""
        import httpx

        from autodata.errors import EndpointError

        for role in roles:
            base_url = self.base_url(role)
            if not self.settings.endpoint(role).base_url:
                continue  # the embedded server answered its health check when it started
            try:
                httpx.get(f"{base_url.rstrip('/')}/models", timeout=10).raise_for_status()
            except httpx.HTTPError as err:
                raise EndpointError(
                    f"Role {role!r}: endpoint {base_url} does not answer GET /models ({err}). "
                    f"Check `roles.{role}.base_url`."
                ) from err

    def client(self, role: RoleName) -> RoleClient:
        """The role's client: chat and raw completions with limits, retries and accounting."""
        if role not in ROLE_NAMES:
            raise ValueError(f"Unknown role {role!r}; roles are {', '.join(ROLE_NAMES)}.")
        if role in self._clients:
            return self._clients[role]
        endpoint = self.settings.endpoint(role)
        base_url = self.base_url(role)
        with self._lock:
            if role not in self._clients:
                limit = endpoint_limits(self.settings).get(base_url, 1)  # the embedded model serves one at a time
                limiter = self._limiters.setdefault(base_url, AdaptiveLimiter(limit))
                api_key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
                self._clients[role] = RoleClient(
                    role,
                    endpoint,
                    base_url=base_url,
                    api_key=api_key or "not-needed",
                    limiter=limiter,
                    ledger=self.usage,
                )
            return self._clients[role]

    def dspy_lm(self, role: RoleName) -> dspy.LM:
        """A `dspy.LM` for the role, to use as `with dspy.context(lm=llms.dspy_lm(role)): ...`."""
        if role not in self._lms:
            from autodata.llm.dspy_engine import configure_dspy_cache, role_lm

            configure_dspy_cache(self.settings.cache_dir / "dspy", enabled=self.cache)
            self._lms[role] = role_lm(self.client(role), cache=self.cache)
        return self._lms[role]


def endpoint_limits(settings: Settings) -> dict[str, int]:
    """Requests in flight allowed per configured base URL: the most any role using it allows."""
    limits: dict[str, int] = {}
    for role in ROLE_NAMES:
        endpoint = settings.endpoint(role)
        if endpoint.base_url:
            limits[endpoint.base_url] = max(limits.get(endpoint.base_url, 1), endpoint.max_concurrency)
    return limits
