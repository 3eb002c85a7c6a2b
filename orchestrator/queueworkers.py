"""Workers over a WorkQueue: a bounded number of handlers at once, taking over what dead workers left,
keeping their own entries claimed while they run, and leaving the group cleanly on shutdown. The
aggregation and delivery services are subclasses that say how to handle an entry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from orchestrator.aio import first, pause
from orchestrator.store import StoreUnavailable
from orchestrator.workqueue import WorkQueue

logger = logging.getLogger(__name__)


class QueueWorkers:
    """Up to ``slots`` handlers at once over a WorkQueue: its new entries, and entries another worker
    left idle for ``claim_idle`` seconds (it died). A handler's entry is kept from going idle while it
    runs; the handler acknowledges it when done. Subclasses say how to handle an entry."""

    what = "work"

    def __init__(self, queue: WorkQueue, *, slots: int, claim_idle: float, block_ms: int = 1000) -> None:
        self.queue = queue
        self.block_ms = block_ms
        self.slots = slots
        self.claim_idle = claim_idle
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._slot = asyncio.Event()
        # A consumer silent this long with nothing pending is one whose process ended without leaving the
        # group (killed, say): removed, so that membership does not grow forever. Generous, as a live
        # worker's reads keep it fresh and a deleted one is recreated by its next read anyway.
        self.reap_idle = max(claim_idle * 10, 3600.0)
        self.reap_interval = 600.0

    def key(self, entry_id: str, fields: dict[str, str]) -> str:
        """What may only be handled once at a time in this process (the entry, by default)."""
        return entry_id

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        raise NotImplementedError

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.inflight)

    # Seconds the handlers under way get to finish on shutdown before they are cancelled.
    shutdown_grace = 0.0

    def extra_loops(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        """Loops a subclass runs beside the workers (a deadline sweeper, say)."""
        return []

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then stop the loops, give the handlers under way
        ``shutdown_grace`` seconds, and cancel what is left."""
        loops = [*self.extra_loops(stop), self._reap_loop(stop)]
        if self.slots > 0:
            loops += [self._read_loop(stop), self._claim_loop(stop)]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop_inflight(self.shutdown_grace)
            if self.slots > 0:
                await self._leave()

    async def _leave(self) -> None:
        try:
            if not await self.queue.leave():
                logger.info("Leaving the %s group with entries pending, for another worker to take over", self.what)
        except StoreUnavailable as e:
            logger.warning("Could not leave the %s group (%s); it is reaped later", self.what, e)

    async def _reap_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reaped = await self.queue.reap_idle_consumers(int(self.reap_idle * 1000))
                if reaped:
                    logger.info(
                        "Removed %d silent %s consumer(s) with nothing pending: %s",
                        len(reaped),
                        self.what,
                        ", ".join(reaped[:10]) + (", ..." if len(reaped) > 10 else ""),
                    )
            except StoreUnavailable as e:
                logger.warning("Reaping silent %s consumers failed (%s)", self.what, e)
            except Exception:
                logger.exception("Reaping silent %s consumers failed", self.what)
            await pause(stop, self.reap_interval)

    async def _read_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.queue.ensure_group()
                break
            except StoreUnavailable as e:
                logger.warning("The %s queue is unavailable (%s); retrying", self.what, e)
                await pause(stop, 1.0)
        while not stop.is_set():
            if self.free_slots <= 0:
                self._slot.clear()
                await first(self._slot.wait(), stop.wait())
                continue
            try:
                # A finite block: fakeredis does not block on 0, and stop must be noticed.
                entries = await self.queue.read(self.free_slots, block_ms=self.block_ms)
            except StoreUnavailable as e:
                logger.warning("Reading the %s queue failed (%s); retrying", self.what, e)
                await pause(stop, 1.0)
                continue
            except Exception:
                logger.exception("Reading the %s queue failed", self.what)
                await pause(stop, 1.0)
                continue
            for entry_id, fields in entries:
                self._start(entry_id, fields)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pause(stop, max(self.claim_idle / 2, 0.2))
            if self.free_slots <= 0 or stop.is_set():
                continue
            try:
                for entry_id, fields in await self.queue.claim_stale(int(self.claim_idle * 1000), self.free_slots):
                    logger.info("Taking over %s %s from a worker that went quiet", self.what, fields)
                    self._start(entry_id, fields)
            except StoreUnavailable as e:
                logger.warning("Claiming stale %s failed (%s)", self.what, e)
            except Exception:
                logger.exception("Claiming stale %s failed", self.what)

    def _start(self, entry_id: str, fields: dict[str, str]) -> None:
        key = self.key(entry_id, fields)
        if key in self.inflight:
            return  # already ours and under way (claimed back after a pause, say)
        task = asyncio.create_task(self._run(entry_id, fields))
        self.inflight[key] = task

        def finished(_: asyncio.Task[None]) -> None:
            self.inflight.pop(key, None)
            self._slot.set()

        task.add_done_callback(finished)

    async def _run(self, entry_id: str, fields: dict[str, str]) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        keeper = asyncio.create_task(self._keep(entry_id, handler))
        try:
            await self.handle(entry_id, fields)
        except asyncio.CancelledError:
            if keeper.done() and not keeper.cancelled():
                return  # stopped because the entry is not ours any more
            raise
        finally:
            keeper.cancel()

    async def _keep(self, entry_id: str, handler: asyncio.Task[Any]) -> None:
        interval = max(self.claim_idle / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.queue.keep(entry_id):
                    # Taken over after a stall of ours: the new owner carries on, this handler stops.
                    logger.warning("%s entry %s was taken over by another worker; stopping here", self.what, entry_id)
                    handler.cancel()
                    return
            except StoreUnavailable as e:
                logger.warning("Could not refresh the claim on %s entry %s: %s", self.what, entry_id, e)

    async def stop_inflight(self, grace: float = 0.0) -> None:
        """Give the handlers under way ``grace`` seconds, then cancel what is left."""
        tasks = list(self.inflight.values())
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
