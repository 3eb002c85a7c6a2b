"""Event fan-out: one Redis pub/sub connection per process, a bounded queue per subscriber.

The connection is held only while this process has subscribers, so a replica serving only the HTTP
API does not decode every event of the cluster. Pub/sub is at-most-once: a message published while the
listener is (re)connecting is lost. So each subscriber records the listener session it caught up in,
and when a new session starts, every subscriber from an older one gets a RESYNC marker and re-reads
what it needs from Redis (a fresh snapshot): nothing is silently missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestrator.aio import first, pause
from orchestrator.backoff import Backoff
from orchestrator.settings import Settings
from orchestrator.store import UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
    # The listener session this subscriber last caught up in: None before its first catch-up, 0 when
    # it caught up while the listener was not subscribed.
    session: int | None = None
    # When it subscribed, on the hub's clock (EventHub.shared).
    joined: int = 0

    def offer(self, item: QueueItem) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()


@dataclass(frozen=True, slots=True)
class _SharedRead:
    session: int | None
    started: int  # on the hub's clock
    task: asyncio.Future[Any]

    def usable_by(self, sub: Subscription) -> bool:
        if self.session != sub.session or self.started < sub.joined:
            return False
        return not self.task.done() or (not self.task.cancelled() and self.task.exception() is None)


class _Unresponsive(Exception):
    """Redis accepted the pub/sub connection but stopped answering pings."""


class EventHub:
    def __init__(
        self, redis: aioredis.Redis, settings: Settings, *, channel: str, max_backoff: float = 5.0, linger: float = 30.0
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.queue_size = settings.ws_queue_size
        self.ping_interval = settings.pubsub_ping_seconds
        self.liveness_timeout = settings.pubsub_liveness_seconds
        self.max_backoff = max_backoff
        self.linger = linger
        self._by_job: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._wanted = asyncio.Event()
        self.connected = asyncio.Event()
        self.session = 0
        self._reconnected = False
        self.reconnects = 0
        # A logical clock ordering subscriptions and the reads they may share.
        self._clock = itertools.count(1)
        self._shared: dict[str, _SharedRead] = {}

    @property
    def subscriber_count(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_job.values())

    @contextlib.contextmanager
    def subscribe(self, job_id: str | None, on_overflow: Callable[[], None] | None = None) -> Iterator[Subscription]:
        """A subscription to one job's events (or every job's, with None), removed on exit."""
        sub = Subscription(job_id, asyncio.Queue(self.queue_size), on_overflow, joined=next(self._clock))
        group = self._all if job_id is None else self._by_job.setdefault(job_id, set())
        group.add(sub)
        self._wanted.set()
        try:
            yield sub
        finally:
            group.discard(sub)
            if job_id is not None and not group:
                self._by_job.pop(job_id, None)
            if not self._all and not self._by_job:
                self._wanted.clear()

    async def ready(self, sub: Subscription, wait: float) -> None:
        """Wait (up to ``wait`` seconds) for the listener to be subscribed, then mark ``sub`` as catching up
        in this session. Call it right before reading the state to send: what is published from then on
        reaches the subscriber, and if the session is lost it will get a RESYNC."""
        if not self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), wait)
        sub.session = self.session if self.connected.is_set() else 0

    async def shared(self, sub: Subscription, name: str, read: Callable[[], Awaitable[T]]) -> T:
        """What ``read()`` returns, or what the same read (by ``name``) that another subscriber started and
        that is still under way returns, when that tells ``sub`` all it needs: it started after ``sub``
        subscribed (what changed before is in it, what changed since is in the queue of ``sub``) and in the
        session ``sub`` caught up in. Sockets that re-sync at once after the listener reconnected (or connect
        at once) thus read Redis once between them. Only for a catch-up that no queued event waits on: one
        filling a gap before an event it has taken from the queue needs a read that started after that event
        was published."""
        shared = self._shared.get(name)
        if shared is None or not shared.usable_by(sub):
            task = asyncio.ensure_future(read())
            shared = self._shared[name] = _SharedRead(sub.session, next(self._clock), task)
            task.add_done_callback(functools.partial(self._read_done, name, shared))
        # Shielded: a socket closing while it waits must not cancel the read of the others.
        return await asyncio.shield(shared.task)

    def _read_done(self, name: str, shared: _SharedRead, task: asyncio.Future[Any]) -> None:
        # Kept only while under way: a finished read (a job with its schema, say) is not held on to.
        if self._shared.get(name) is shared:
            del self._shared[name]
        if not task.cancelled():
            task.exception()  # retrieved: a read nobody waits for any more must not be reported as unhandled

    def dispatch(self, raw: str) -> None:
        if not self._all and not self._by_job:
            return  # nobody listens here any more (the connection lingers a little): skip decoding
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

    def _subscriptions(self) -> Iterator[Subscription]:
        yield from self._all
        for group in self._by_job.values():
            yield from group

    def _start_session(self) -> None:
        """Subscribed anew: whoever caught up before (in an earlier session, or while there was none)
        may have missed events. A subscriber yet to catch up will do so in this session anyway."""
        self.session += 1
        stale = [sub for sub in self._subscriptions() if sub.session is not None and sub.session != self.session]
        if stale and self.session > 1:
            logger.info("Event listener subscribed again; re-syncing %d subscriber(s)", len(stale))
        for sub in stale:
            sub.offer(RESYNC)
        self.connected.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen while there are subscribers, until ``stop`` is set, reconnecting with backoff."""
        backoff = Backoff(0.1, self.max_backoff)
        while not stop.is_set():
            if not self._wanted.is_set():
                await first(self._wanted.wait(), stop.wait())
                continue
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._confirmed(pubsub)
                # redis-py may reconnect and re-subscribe inside get_message() (its retry policy), never
                # raising: whatever was published meanwhile is lost, so treat that as a new session too.
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(self._on_reconnect)
                if self.session:
                    self.reconnects += 1
                self._start_session()
                backoff.reset()
                await self._listen(pubsub, stop)
            except (*UNAVAILABLE_ERRORS, RedisError, _Unresponsive) as e:
                if self.connected.is_set():
                    logger.warning("Event listener lost Redis (%s: %s); reconnecting", e.__class__.__name__, e)
                self.connected.clear()
                await pause(stop, backoff.next())
            except Exception:
                # Anything else (a message that is not UTF-8, say) must not end fan-out for good.
                logger.exception("Event listener failed; restarting it")
                self.connected.clear()
                await pause(stop, backoff.next())
            finally:
                self.connected.clear()
                # The connection goes back to the pool: it must not report its reconnects to us any more.
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._on_reconnect)
                self._reconnected = False
                with contextlib.suppress(*UNAVAILABLE_ERRORS, RedisError):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def _confirmed(self, pubsub: aioredis.client.PubSub) -> None:
        """Wait for Redis to confirm the subscription: until then, publications may not reach us."""
        deadline = time.monotonic() + self.liveness_timeout
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                return
            if message is not None and message["type"] == "message":
                self.dispatch(message["data"])
        raise _Unresponsive("Redis did not confirm the subscription")

    def _on_reconnect(self, connection: Any) -> None:
        self._reconnected = True

    async def _listen(self, pubsub: aioredis.client.PubSub, stop: asyncio.Event) -> None:
        """Dispatch messages until stopped, or until nobody has subscribed for ``linger`` seconds."""
        last_heard = last_ping = idle_since = time.monotonic()
        while not stop.is_set():
            # A finite timeout: the default of 0 busy-loops.
            message = await pubsub.get_message(timeout=min(1.0, self.ping_interval))
            if self._reconnected:
                self._reconnected = False
                self.reconnects += 1
                logger.warning("Event listener's connection was re-established by the client; re-syncing")
                self._start_session()
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    self.dispatch(message["data"])
                    # get_message() does not yield while data is buffered; let the socket writers
                    # drain their queues between events so a burst does not overflow them.
                    await asyncio.sleep(0)
            if self._wanted.is_set():
                idle_since = now
            elif now - idle_since > self.linger:
                return
            if now - last_ping >= self.ping_interval:
                await pubsub.ping()
                last_ping = now
            if now - last_heard > self.liveness_timeout:
                raise _Unresponsive(f"no answer from Redis for {now - last_heard:.1f}s")
