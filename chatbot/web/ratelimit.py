"""Per-client rate limiting: an in-memory sliding window of request times per key.

One process, one window per client IP. Replicas behind a load balancer each count on their
own, so the effective limit is per replica; a shared limiter (Redis) would be the next step.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0
_SWEEP_EVERY = 1000  # calls between sweeps of idle clients, so memory stays bounded


class SlidingWindowLimiter:
    """At most ``limit`` requests per ``window`` seconds per key; ``limit`` 0 turns it off."""

    def __init__(self, limit: int, window: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def check(self, key: str) -> float | None:
        """Record a request; None when allowed, else the seconds until one is allowed again."""
        if self.limit <= 0:
            return None
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls % _SWEEP_EVERY == 0:
                self._sweep(now)
            times = self._hits.setdefault(key, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                return max(times[0] + self.window - now, 0.001)
            times.append(now)
            return None

    def _sweep(self, now: float) -> None:
        for key in [k for k, t in self._hits.items() if not t or t[-1] <= now - self.window]:
            del self._hits[key]


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; round up so a client that obeys it is let through."""
    return str(max(1, math.ceil(seconds)))
