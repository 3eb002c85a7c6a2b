"""The durable hand-off: a Redis Stream with one consumer group shared by every replica's workers.

The UPDATE script appends a job to the stream when its last client reports. A worker reads it with
XREADGROUP, which leaves it pending under that worker's name until acknowledged; a worker that dies
leaves it pending, and after AGGREGATION_CLAIM_IDLE any other worker takes it over with XAUTOCLAIM.
A live worker keeps its entries from going idle while it waits on a slow aggregation.
"""

from __future__ import annotations

from typing import cast

from redis.exceptions import ResponseError

from orchestrator.store import JobStore

GROUP = "aggregators"


class WorkQueue:
    """A stream of work and one consumer group over it (the aggregation queue by default)."""

    def __init__(self, store: JobStore, consumer: str, *, stream: str | None = None, group: str = GROUP) -> None:
        self.store = store
        self.redis = store.redis
        self.stream = stream or store.keys.aggregation_queue
        self.group = group
        self.consumer = consumer

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
        """Entries another worker left pending for longer than ``min_idle_ms``, now ours."""
        async with self.store.guard("queue"):
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
            )
        entries = cast(list[tuple[str, dict[str, str]]], reply[1])
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    async def keep(self, entry_id: str) -> None:
        """Reset the entry's idle time, so nobody takes over a job still being aggregated."""
        async with self.store.guard("queue"):
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, min_idle_time=0, message_ids=[entry_id], justid=True
            )

    async def done(self, entry_id: str) -> None:
        """Acknowledge and delete the entry: the job is finished (or needs nothing more)."""
        async with self.store.guard("queue"), self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()
