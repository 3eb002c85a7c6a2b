"""A request waits for an unresponsive Redis once, not once per call.

Every Redis call is bounded by REDIS_TIMEOUT (connections.create_redis), but a request makes several: a
write that timed out is followed by the audit entry of its refusal, which would wait as long again. Within a
scope (the error middleware opens one per request), once a call has waited out the timeout, the scope's
later calls for one REDIS_TIMEOUT fail at once (JobStore.guard). Long-running loops open no scope: each of
their calls gets its own wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# A list, so that a call deep inside the request (or a task it started) marks the request's own scope.
_waited_at: ContextVar[list[float] | None] = ContextVar("redis_waited_at", default=None)


@contextmanager
def redis_wait_scope() -> Iterator[None]:
    """Within this scope Redis is waited for at most once per REDIS_TIMEOUT."""
    token = _waited_at.set([-math.inf])
    try:
        yield
    finally:
        _waited_at.reset(token)


def waited_recently(timeout: float) -> bool:
    """Whether a call of this scope waited out the timeout less than ``timeout`` seconds ago."""
    scope = _waited_at.get()
    return scope is not None and time.monotonic() - scope[0] < timeout


def note_failure(elapsed: float, timeout: float) -> None:
    """A call of this scope failed after ``elapsed`` seconds: a wait for Redis if it took most of the timeout
    (a refused connection or a Redis error answer fails fast by itself and marks nothing)."""
    scope = _waited_at.get()
    if scope is not None and elapsed >= timeout / 2:
        scope[0] = time.monotonic()
