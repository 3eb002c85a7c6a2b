"""CPU work too long for the event loop, in a worker process.

Reading a large request (an 18 MB body: JSON, a schema of a million categories, its vector layout) takes
a second of CPU. In a thread it would still stall the loop: ``json.loads`` and ``json.dumps`` hold the GIL
from start to end. So a body past ``threshold`` bytes is parsed in a process of its own; what comes back
(a validated request whose schema is one string and whose vector is one bytes object) unpickles at memory
speed. Smaller bodies, the common case, are parsed inline: a process round trip would cost them more than
it saves.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from orchestrator.errors import ApiError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerLost(ApiError):
    """The worker process died under a request (503: retry)."""

    status = 503
    code = "worker_unavailable"
    headers = {"Retry-After": "1"}  # noqa: RUF012 - a class default, never mutated


def _lower_priority() -> None:
    os.nice(10)


class Offloader:
    def __init__(self, threshold: int, workers: int = 1) -> None:
        """``threshold``: bodies of at least this many bytes are parsed in a worker process (0: never)."""
        self.threshold = threshold
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, size: int, fn: Callable[..., T], *args: Any, small_in_thread: bool = False) -> T:
        """``fn(*args)``: inline (or, with ``small_in_thread``, in a thread: for pure-Python work, which gives
        the loop its turn) when ``size`` is below the threshold, else in a worker process. ``fn`` must be a
        module-level function and its arguments, result and exceptions picklable."""
        if not self.threshold or size < self.threshold:
            return await asyncio.to_thread(fn, *args) if small_in_thread else fn(*args)
        loop = asyncio.get_running_loop()
        pool = self._executor()
        try:
            return await loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            # The worker died (killed, out of memory: maybe by this very input, so it is not tried here
            # instead). The next call starts another; this one is refused, to be retried.
            logger.warning("The worker process died during %s; the next large request starts another", fn.__name__)
            self._discard(pool)
            raise WorkerLost("The worker process for large requests stopped; retry the request") from None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the service has threads (the executor's, redis-py's, aiofiles') that a fork
            # would copy in whatever state they are.
            # Niced: when the cores are busy, the event loop's process goes first and parsing waits.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )
        return self._pool

    def _discard(self, pool: ProcessPoolExecutor | None = None) -> None:
        """Shut the pool down: ``pool`` only if it is still the current one (a late failure of an old pool
        must not cancel the work of its replacement)."""
        if self._pool is not None and (pool is None or pool is self._pool):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._discard()
