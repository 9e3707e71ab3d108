"""A circuit breaker per dependency, so a dead Redis or PostgreSQL costs no latency.

closed: calls go through; ``failures`` consecutive failures open it.
open: calls are refused at once (the caller serves fallback content) for ``reset``
seconds, then one trial call is let through (half-open): success closes it, failure
opens it again. The API runs on one event loop, so no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    def __init__(
        self, name: str, *, failures: int = 3, reset: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = max(1, failures)
        self.reset = reset
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.last_error = ""
        self._trial_in_flight = False

    def allow(self) -> bool:
        """May a call be made now? (In half-open, only one trial at a time.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.reset:
                return False
            self._set(HALF_OPEN)
        if self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def success(self) -> None:
        self.failures = 0
        self._trial_in_flight = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self, error: BaseException | str = "") -> None:
        self.last_error = error if isinstance(error, str) else type(error).__name__
        self._trial_in_flight = False
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            if self.state != OPEN:
                self._set(OPEN)

    def retry_after(self) -> int:
        """Whole seconds until the next trial call (at least 1)."""
        left = self.reset - (self.clock() - self.opened_at) if self.state == OPEN else 0
        return max(1, int(left + 0.999))

    def _set(self, state: str) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(self.name, state)
