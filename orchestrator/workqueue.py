"""Durable work: a Redis Stream with one consumer group shared by every replica's workers (the aggregation
queue and the delivery queue are two of them; queueworkers.py consumes them).

A script appends an entry to the stream (UPDATE a job whose last client reported, FINISH a delivery). A
worker reads it with XREADGROUP, which leaves it pending under that worker's name until acknowledged; a
worker that dies leaves it pending, and after the claim-idle time any other worker takes it over with
XAUTOCLAIM. A live worker keeps its entries from going idle while it works on them.
"""

from __future__ import annotations

import logging
from typing import cast

from redis.exceptions import ResponseError

from orchestrator.store import JobStore

logger = logging.getLogger(__name__)


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
    """A stream of work and one consumer group over it, read as ``consumer``."""

    def __init__(self, store: JobStore, consumer: str, *, stream: str, group: str) -> None:
        self.store = store
        self.redis = store.redis
        self.stream = stream
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
