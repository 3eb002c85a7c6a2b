"""Exponential backoff with one jitter rule, for every retry loop (client, coordinator, listener, deliveries).

    backoff = Backoff(first=0.2, cap=10.0)
    while not done():
        await asyncio.sleep(backoff.next())   # ~0.2, ~0.4, ~0.8, ... never over 10
    backoff.reset()                           # after a success

Each wait is the current delay times a random factor in [1 - JITTER, 1 + JITTER), so that replicas or
clients that failed together do not retry together, and never more than the cap. A server's Retry-After
wins over the computed wait (within ``retry_after_cap``, so a server cannot park the caller for hours).
"""

from __future__ import annotations

import random

JITTER = 0.5


def jittered(delay: float, cap: float = float("inf")) -> float:
    """``delay`` spread by the jitter rule, at most ``cap``."""
    return min(delay * (1 - JITTER + 2 * JITTER * random.random()), cap)


class Backoff:
    """Waits that start at ``first`` and grow by ``factor`` per retry up to ``cap`` (``factor`` 1: a
    steady, jittered pace)."""

    def __init__(self, first: float, cap: float, *, factor: float = 2.0, retry_after_cap: float | None = None) -> None:
        if first < 0 or cap < 0 or factor < 1:
            raise ValueError("Backoff needs first >= 0, cap >= 0 and factor >= 1")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.retry_after_cap = cap if retry_after_cap is None else retry_after_cap
        self.delay = min(first, cap)

    def next(self, retry_after: float | None = None) -> float:
        """The wait before the next try (the server's ``retry_after`` seconds when given); the delay
        behind the following one grows either way."""
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), self.retry_after_cap)
        else:
            wait = jittered(self.delay, self.cap)
        self.delay = min(self.delay * self.factor, self.cap)
        return wait

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self.delay = min(self.first, self.cap)


def retry_after_seconds(header: str | None) -> float | None:
    """A Retry-After header in seconds (its delta-seconds form), or None when absent or not a number."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None
