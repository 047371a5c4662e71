"""Usage accounting per role, and the optional budget that stops a job cleanly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from autodata.errors import BudgetExceeded


@dataclass
class RoleUsage:
    calls: int = 0  # successful requests
    errors: int = 0  # requests that failed for good (after retries)
    retries: int = 0  # attempts repeated after 429/5xx/timeouts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)  # successful requests, retries included

    def percentile_s(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Budget:
    """Limits for one job; None means unlimited."""

    max_calls: int | None = None
    max_tokens: int | None = None
    # Set by another thread to stop the job cleanly at its next LLM call, as a spent budget
    # does (a service worker that lost its job's lease, or is draining after SIGTERM).
    stop: threading.Event | None = field(default=None, compare=False)


_item_ledger: ContextVar[UsageLedger | None] = ContextVar("autodata_item_ledger", default=None)


@contextmanager
def attribute_usage_to(ledger: UsageLedger) -> Iterator[UsageLedger]:
    """Also count the calls made in this context (thread) into `ledger`: one item's cost."""
    token = _item_ledger.set(ledger)
    try:
        yield ledger
    finally:
        _item_ledger.reset(token)


class UsageLedger:
    """Thread-safe counters per role; checks the budget before each call.

    Records also go to the ledger set by `attribute_usage_to` in the calling context,
    so a job can tell what each item cost while keeping one total.
    """

    def __init__(self, budget: Budget = Budget()):
        self.budget = budget
        self._roles: dict[str, RoleUsage] = {}
        self._lock = threading.Lock()

    def _role(self, role: str) -> RoleUsage:
        return self._roles.setdefault(role, RoleUsage())

    def check_budget(self) -> None:
        if self.budget.stop is not None and self.budget.stop.is_set():
            raise BudgetExceeded("The job was stopped (its worker lost the job's lease, or is shutting down).")
        with self._lock:
            calls = sum(u.calls + u.errors for u in self._roles.values())
            tokens = sum(u.prompt_tokens + u.completion_tokens for u in self._roles.values())
        if self.budget.max_calls is not None and calls >= self.budget.max_calls:
            raise BudgetExceeded(f"LLM call budget spent: {calls} of {self.budget.max_calls} calls.")
        if self.budget.max_tokens is not None and tokens >= self.budget.max_tokens:
            raise BudgetExceeded(f"LLM token budget spent: {tokens} of {self.budget.max_tokens} tokens.")

    def _also(self) -> UsageLedger | None:
        item = _item_ledger.get()
        return item if item is not None and item is not self else None

    def record_success(self, role: str, *, prompt_tokens: int, completion_tokens: int, latency_s: float) -> None:
        if item := self._also():
            item.record_success(
                role, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_s=latency_s
            )
        with self._lock:
            usage = self._role(role)
            usage.calls += 1
            usage.prompt_tokens += prompt_tokens
            usage.completion_tokens += completion_tokens
            usage.latencies_s.append(latency_s)

    def record_retry(self, role: str) -> None:
        if item := self._also():
            item.record_retry(role)
        with self._lock:
            self._role(role).retries += 1

    def record_error(self, role: str) -> None:
        if item := self._also():
            item.record_error(role)
        with self._lock:
            self._role(role).errors += 1

    def add_totals(self, totals: dict[str, dict[str, int]]) -> None:
        """Count calls made elsewhere (a Ray worker's seed), given as `totals()`; no latencies."""
        with self._lock:
            for role, cost in totals.items():
                usage = self._role(role)
                usage.calls += cost.get("calls", 0)
                usage.prompt_tokens += cost.get("prompt_tokens", 0)
                usage.completion_tokens += cost.get("completion_tokens", 0)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per role: calls and tokens only (what an item cost; adds up across items)."""
        with self._lock:
            return {
                role: {"calls": u.calls, "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
                for role, u in sorted(self._roles.items())
            }

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Per role: calls, errors, retries, tokens and latency percentiles (seconds)."""
        with self._lock:
            return {
                role: {
                    "calls": u.calls,
                    "errors": u.errors,
                    "retries": u.retries,
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "latency_p50_s": u.percentile_s(0.5),
                    "latency_p90_s": u.percentile_s(0.9),
                    "latency_p99_s": u.percentile_s(0.99),
                }
                for role, u in sorted(self._roles.items())
            }

    def as_metrics(self, prefix: str = "llm") -> dict[str, float]:
        """Flat `{"llm.<role>.<name>": value}` for MLflow; missing percentiles are left out."""
        return {
            f"{prefix}.{role}.{name}": float(value)
            for role, values in self.summary().items()
            for name, value in values.items()
            if value is not None
        }

    def format_table(self) -> str:
        return self.format_rows(self.summary())

    @staticmethod
    def format_rows(summary: dict[str, dict]) -> str:
        """A plain-text table of a `summary()`."""
        header = (
            f"{'role':<10} {'calls':>6} {'errors':>6} {'retries':>7} {'prompt tok':>10} {'compl tok':>9} "
            f"{'p50 s':>6} {'p90 s':>6}"
        )
        rows = [header]
        for role, u in summary.items():
            p50 = f"{u['latency_p50_s']:.2f}" if u["latency_p50_s"] is not None else "-"
            p90 = f"{u['latency_p90_s']:.2f}" if u["latency_p90_s"] is not None else "-"
            rows.append(
                f"{role:<10} {u['calls']:>6} {u['errors']:>6} {u['retries']:>7} {u['prompt_tokens']:>10} "
                f"{u['completion_tokens']:>9} {p50:>6} {p90:>6}"
            )
        return "\n".join(rows)
