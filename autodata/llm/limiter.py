"""Adaptive concurrency per endpoint: halve on 429, creep back up on success (AIMD)."""

from __future__ import annotations

import threading
from contextlib import contextmanager


class AdaptiveLimiter:
    """At most `limit` requests in flight; `limit` moves between 1 and `max_limit`.

    A 429 halves the limit (multiplicative decrease), but only once per generation:
    429s from requests that started before the last decrease carry no news and are
    ignored, as TCP ignores losses within one round trip. Every `limit` successes in a
    row raise the limit by one (additive increase).

    Usage:
        with limiter.slot() as generation:
            ...  # on a 429: limiter.on_rate_limited(generation)
    """

    def __init__(self, max_limit: int):
        self.max_limit = max_limit
        self.limit = max_limit
        self._in_flight = 0
        self._successes = 0
        self._generation = 0  # bumped by every decrease
        self._cond = threading.Condition(threading.RLock())  # try_acquire runs inside slot()'s hold

    @contextmanager
    def slot(self):
        with self._cond:
            while (generation := self.try_acquire()) is None:
                self._cond.wait()
        try:
            yield generation
        finally:
            self.release()

    def try_acquire(self) -> int | None:
        """Take a slot if one is free: its generation, else None (never blocks)."""
        with self._cond:
            if self._in_flight >= self.limit:
                return None
            self._in_flight += 1
            return self._generation

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()  # one slot freed, one waiter to wake (not all: hundreds may wait)

    def on_success(self) -> None:
        with self._cond:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.max_limit:
                self.limit += 1
                self._successes = 0
                self._cond.notify_all()

    def on_rate_limited(self, generation: int) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            self._generation += 1
