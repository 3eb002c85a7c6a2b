"""Event fan-out: one Redis pub/sub connection per process, a bounded queue per subscriber.

Pub/sub is at-most-once: a message published while the listener is reconnecting is lost. So after
every reconnect each subscriber gets a RESYNC marker and re-reads what it needs from Redis (the job's
event history or a fresh snapshot): nothing is silently missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestrator.store import UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    job_id: str
    version: int
    type: str
    raw: str  # the JSON text as published, forwarded to sockets without re-encoding


class Resync:
    """Queued to every subscriber after the listener reconnected: events may have been missed."""


RESYNC = Resync()
QueueItem = Event | Resync


@dataclass(eq=False)
class Subscription:
    job_id: str | None  # None: every job
    queue: asyncio.Queue[QueueItem]
    on_overflow: Callable[[], None] | None = None
    overflowed: bool = False

    def offer(self, item: QueueItem) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()


class _Unresponsive(Exception):
    """Redis accepted the pub/sub connection but stopped answering pings."""


class EventHub:
    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        *,
        queue_size: int = 256,
        ping_interval: float = 5.0,
        liveness_timeout: float = 15.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.queue_size = queue_size
        self.ping_interval = ping_interval
        self.liveness_timeout = liveness_timeout
        self.max_backoff = max_backoff
        self._by_job: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.delivered = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_job.values())

    @contextlib.contextmanager
    def subscribe(self, job_id: str | None, on_overflow: Callable[[], None] | None = None) -> Iterator[Subscription]:
        """A subscription to one job's events (or every job's, with None), removed on exit."""
        sub = Subscription(job_id, asyncio.Queue(self.queue_size), on_overflow)
        group = self._all if job_id is None else self._by_job.setdefault(job_id, set())
        group.add(sub)
        try:
            yield sub
        finally:
            group.discard(sub)
            if job_id is not None and not group:
                self._by_job.pop(job_id, None)

    def dispatch(self, raw: str) -> None:
        try:
            data: dict[str, Any] = json.loads(raw)
            event = Event(str(data["jobId"]), int(data["version"]), str(data["type"]), raw)
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring a malformed event on %s: %.200s", self.channel, raw)
            return
        for sub in self._by_job.get(event.job_id, ()):
            sub.offer(event)
        for sub in self._all:
            sub.offer(event)
        self.delivered += 1

    def _resync_all(self) -> None:
        for sub in self._all:
            sub.offer(RESYNC)
        for group in self._by_job.values():
            for sub in group:
                sub.offer(RESYNC)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, reconnecting with backoff for as long as it takes."""
        backoff = 0.1
        first = True
        while not stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if not first:
                    self.reconnects += 1
                    logger.info(
                        "Event listener reconnected to Redis; re-syncing %d subscriber(s)", self.subscriber_count
                    )
                    self._resync_all()
                first = False
                self.connected.set()
                backoff = 0.1
                await self._listen(pubsub, stop)
            except (*UNAVAILABLE_ERRORS, RedisError, _Unresponsive) as e:
                if self.connected.is_set():
                    logger.warning("Event listener lost Redis (%s: %s); reconnecting", e.__class__.__name__, e)
                self.connected.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                with contextlib.suppress(*UNAVAILABLE_ERRORS, RedisError):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
        self.connected.clear()

    async def _listen(self, pubsub: aioredis.client.PubSub, stop: asyncio.Event) -> None:
        last_heard = last_ping = time.monotonic()
        while not stop.is_set():
            # A finite timeout: the default of 0 busy-loops.
            message = await pubsub.get_message(timeout=min(1.0, self.ping_interval))
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    self.dispatch(message["data"])
                    # get_message() does not yield while data is buffered; let the socket writers
                    # drain their queues between events so a burst does not overflow them.
                    await asyncio.sleep(0)
            if now - last_ping >= self.ping_interval:
                await pubsub.ping()
                last_ping = now
            if now - last_heard > self.liveness_timeout:
                raise _Unresponsive(f"no answer from Redis for {now - last_heard:.1f}s")
