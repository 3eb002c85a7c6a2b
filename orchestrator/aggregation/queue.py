"""The durable hand-off: a Redis Stream with one consumer group shared by every replica's workers.

The UPDATE script appends a job to the stream when its last client reports. A worker reads it with
XREADGROUP, which leaves it pending under that worker's name until acknowledged; a worker that dies
leaves it pending, and after AGGREGATION_CLAIM_IDLE any other worker takes it over with XAUTOCLAIM.
A live worker keeps its entries from going idle while it waits on a slow aggregation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, cast

from redis.exceptions import ResponseError

from orchestrator.aio import first, pause
from orchestrator.store import JobStore, StoreUnavailable

logger = logging.getLogger(__name__)

GROUP = "aggregators"


def read_block_ms(redis_timeout: float) -> int:
    """How long an idle read of the queue blocks (XREADGROUP BLOCK): well inside REDIS_TIMEOUT, the socket
    timeout of every call, which would otherwise cut each idle read short (a timeout logged every time, and
    an entry Redis handed over meanwhile left pending until the claim-idle time)."""
    return max(10, min(1000, int(redis_timeout * 1000 / 2)))


# KEYS[1] stream  ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id
# Reset the entry's idle time only if this consumer owns it. Returns 1 if so, else 0.
_KEEP_IF_OWNED = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# KEYS[1] stream  ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id
# Acknowledge and delete the entry only if this consumer owns it (or nobody does any more: it was
# acknowledged already). Returns 1 when done, 0 when another consumer owns it.
_DONE_IF_OWNED = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending > 0 and pending[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] stream  ARGV[1] group  ARGV[2] consumer
# Delete the consumer from the group if it has nothing pending (deleting it would drop its pending entries,
# which another worker must be able to take over). Returns 1 if deleted, else 0.
_LEAVE_IF_IDLE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] stream  ARGV[1] group  ARGV[2] idle ms  ARGV[3] this consumer
# Delete every other consumer that has nothing pending and has not been heard of for longer than ARGV[2]
# ms (a process that stopped without leaving the group). Returns the names deleted.
_REAP_IDLE = """
local reaped = {}
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #fields, 2 do
    info[fields[i]] = fields[i + 1]
  end
  if info['name'] ~= ARGV[3] and tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(reaped, info['name'])
  end
end
return reaped
"""


class WorkQueue:
    """A stream of work and one consumer group over it (the aggregation queue by default)."""

    def __init__(self, store: JobStore, consumer: str, *, stream: str | None = None, group: str = GROUP) -> None:
        self.store = store
        self.redis = store.redis
        self.stream = stream or store.keys.aggregation_queue
        self.group = group
        self.consumer = consumer
        self._cursor = "0-0"
        self._keep = store.redis.register_script(_KEEP_IF_OWNED)
        self._done = store.redis.register_script(_DONE_IF_OWNED)
        self._leave = store.redis.register_script(_LEAVE_IF_IDLE)
        self._reap = store.redis.register_script(_REAP_IDLE)

    async def ensure_group(self) -> None:
        async with self.store.guard("queue"):
            try:
                await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def read(self, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        """New entries for this consumer: (entry id, fields)."""
        async with self.store.guard("queue"):
            try:
                reply = await self.redis.xreadgroup(
                    self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
                )
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                await self.ensure_group()  # the stream was deleted (a FLUSHDB, say): recreate the group
                return []
        streams = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], reply or [])
        return [(entry_id, fields) for _, entries in streams for entry_id, fields in entries]

    async def claim_stale(self, min_idle_ms: int, count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries another worker left pending for longer than ``min_idle_ms``, now ours. Each call goes
        on from where the last one stopped (Redis scans a bounded stretch of the pending list per call)."""
        async with self.store.guard("queue"):
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, start_id=self._cursor, count=count
            )
        self._cursor = str(reply[0])
        entries = cast(list[tuple[str, dict[str, str]]], reply[1])
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    async def keep(self, entry_id: str) -> bool:
        """Reset the entry's idle time, so nobody takes it over while it is worked on; False when it is
        no longer ours (another worker took it over after a stall of ours)."""
        async with self.store.guard("queue"):
            return bool(await self._keep(keys=[self.stream], args=[self.group, self.consumer, entry_id]))

    async def done(self, entry_id: str) -> bool:
        """Acknowledge and delete the entry, if it is still ours; False when another worker has it."""
        async with self.store.guard("queue"):
            return bool(await self._done(keys=[self.stream], args=[self.group, self.consumer, entry_id]))

    async def leave(self) -> bool:
        """Delete this consumer from the group if it has nothing pending (on a clean shutdown: membership
        would otherwise grow by one consumer per process lifetime). False when it keeps pending entries."""
        async with self.store.guard("queue"):
            try:
                return bool(await self._leave(keys=[self.stream], args=[self.group, self.consumer]))
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                return False

    async def reap_idle_consumers(self, min_idle_ms: int) -> list[str]:
        """Delete the other consumers with nothing pending that have been silent for ``min_idle_ms`` (their
        process ended without leaving); their names."""
        async with self.store.guard("queue"):
            try:
                reaped = await self._reap(keys=[self.stream], args=[self.group, min_idle_ms, self.consumer])
            except ResponseError as e:
                if "NOGROUP" not in str(e) and "no such key" not in str(e):
                    raise
                return []
        return [str(name) for name in reaped]


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
