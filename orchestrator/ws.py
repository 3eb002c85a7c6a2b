"""WebSocket endpoints: `/ws/jobs/{jobId}` (one job) and `/ws` (every job, the dashboard's feed).

A socket gets a snapshot first, then events in version order. Each socket has a bounded queue fed by
the process's EventHub and its own writer task; a socket whose queue overflows (a client that does
not read) is closed with 1013 and its transport aborted, without slowing anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from orchestrator.errors import ApiError, ValidationError
from orchestrator.hub import RESYNC, Event, EventHub, Subscription
from orchestrator.models import Job, iso_ms
from orchestrator.security.policy import principal
from orchestrator.serializers import RawJSON, dumps, job_detail, job_summary
from orchestrator.settings import Settings
from orchestrator.store import JobStore, StoreRefused, StoreUnavailable, now_ms
from orchestrator.typedefs import HUB, SETTINGS, SOCKETS, STORE
from orchestrator.validation import validate_id

logger = logging.getLogger(__name__)
T = TypeVar("T")

SLOW_CONSUMER = WSCloseCode.TRY_AGAIN_LATER  # 1013: the client did not keep up; reconnect with ?since=
_MAX_TRACKED_JOBS = 10_000
_CATCH_UP_RETRY = 1.0
# How long a new socket waits for the process's event listener to subscribe before it reads the state
# anyway (Redis is down, say); it then gets a fresh snapshot once the listener is subscribed.
_READY_WAIT = 2.0


class SocketRegistry:
    """Open sockets of this process, for the connection limit and for closing them on shutdown."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.per_subject: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.sockets)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close_all(self) -> None:
        """Close every socket with 1001 (going away); shutdown would otherwise wait for each."""
        sockets = list(self.sockets)
        if sockets:
            logger.info("Closing %d WebSocket(s) for shutdown", len(sockets))
        await asyncio.gather(
            *(_close(ws, WSCloseCode.GOING_AWAY, b"server shutting down") for ws in sockets), return_exceptions=True
        )


async def _close(ws: web.WebSocketResponse, code: int, message: bytes, transport: Any = None) -> None:
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), 1.0)
    except (TimeoutError, ConnectionError, RuntimeError):
        if transport is not None:
            transport.abort()


class SlowConsumer(Exception):
    """The client is not reading: its queue or its transport buffer is full."""


class Outbox:
    """Sends to one socket, refusing to buffer more than ``limit`` bytes in user space for a client
    that has stopped reading (aiohttp would otherwise queue a few hundred KB before blocking)."""

    def __init__(self, ws: web.WebSocketResponse, transport: Any, limit: int) -> None:
        self.ws = ws
        self.transport = transport
        self.limit = limit

    async def text(self, data: str) -> None:
        if self.transport is not None and self.transport.get_write_buffer_size() > self.limit:
            raise SlowConsumer(f"{self.transport.get_write_buffer_size()} bytes unsent")
        await self.ws.send_str(data)

    async def json(self, data: dict[str, Any]) -> None:
        await self.text(json.dumps(data))

    @property
    def closed(self) -> bool:
        return self.ws.closed


async def job_socket(request: web.Request) -> web.WebSocketResponse:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    raw_since = request.query.get("since")
    since = None
    if raw_since not in (None, ""):
        assert raw_since is not None
        if not (raw_since.isascii() and raw_since.isdigit() and len(raw_since) <= 15):
            raise ValidationError("'since' must be a non-negative integer version", code="invalid_query", field="since")
        since = int(raw_since)
    # A client reads only jobs it takes part in (checked at connect): its socket ends with the job, so a
    # job of the same id created later by others is not shown to it.
    until_expired = principal(request).role == "client"
    feed = JobFeed(request.app[STORE], request.app[HUB], job_id, since, until_expired=until_expired)
    return await _serve(request, feed, job_id)


async def all_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    who = principal(request)
    allow = who.may_touch if who.jobs is not None else None
    feed = AllFeed(request.app[STORE], request.app[HUB], settings.ws_snapshot_jobs, allow)
    return await _serve(request, feed, None)


async def _serve(request: web.Request, feed: JobFeed | AllFeed, job_id: str | None) -> web.WebSocketResponse:
    settings: Settings = request.app[SETTINGS]
    registry = request.app[SOCKETS]
    # The handshake's Host and Origin were checked by the security middleware (security.browsers).
    # No per-message compression: with fan-out it would deflate every event once per socket.
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_seconds, max_msg_size=64 * 1024, compress=False)
    if not ws.can_prepare(request).ok:
        raise ValidationError("This endpoint needs a WebSocket upgrade", code="websocket_required")
    if len(registry) >= settings.ws_max_connections:
        raise ApiError("Too many WebSocket connections on this replica", code="too_many_connections", http_status=503)
    who = principal(request)
    subject = who.sub if who.authenticated else None
    if subject is not None and registry.per_subject[subject] >= settings.ws_max_per_token:
        raise ApiError(
            f"{subject} already has {settings.ws_max_per_token} WebSockets open on this replica",
            code="too_many_sockets",
            http_status=429,
            headers={"Retry-After": "5"},
        )
    transport = request.transport
    if transport is not None and (sock := transport.get_extra_info("socket")) is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.ws_send_buffer_bytes)
    await ws.prepare(request)
    registry.sockets.add(ws)
    if subject is not None:
        registry.per_subject[subject] += 1
    writer: asyncio.Task[None] | None = None

    def drop_slow_consumer() -> None:
        logger.warning("Dropping a slow WebSocket on %s: it stopped reading", request.path)
        if writer is not None:
            writer.cancel()
        registry.spawn(_close(ws, SLOW_CONSUMER, b"slow consumer: reconnect with ?since=", transport))

    outbox = Outbox(ws, transport, settings.ws_send_buffer_bytes)
    expiry = None
    if who.authenticated and who.expires_at is not None:
        # The token's validity ends the socket too: the client reconnects with a fresh one.
        expiry = asyncio.get_running_loop().call_later(
            max(who.expires_at - time.time(), 0),
            lambda: registry.spawn(_close(ws, WSCloseCode.POLICY_VIOLATION, b"token expired", transport)),
        )
    with request.app[HUB].subscribe(job_id, drop_slow_consumer) as sub:
        writer = asyncio.create_task(_write(outbox, feed, sub, drop_slow_consumer))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT and message.data == "ping":
                    # An application-level ping for clients (browsers) that cannot send protocol pings.
                    with contextlib.suppress(SlowConsumer, ConnectionError):
                        await outbox.text('{"type":"pong"}')
        finally:
            if expiry is not None:
                expiry.cancel()
            registry.sockets.discard(ws)
            if subject is not None:
                registry.per_subject[subject] -= 1
                if registry.per_subject[subject] <= 0:
                    del registry.per_subject[subject]
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    return ws


async def _write(outbox: Outbox, feed: JobFeed | AllFeed, sub: Subscription, on_slow: Callable[[], None]) -> None:
    try:
        await feed.run(outbox, sub)
    except SlowConsumer:
        on_slow()
    except (ConnectionError, RuntimeError) as e:
        logger.debug("WebSocket writer ended: %s", e)
    except Exception:
        logger.exception("WebSocket writer failed")
        await _close(outbox.ws, WSCloseCode.INTERNAL_ERROR, b"internal error")


async def _retrying(ws: Outbox, read: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a store read, retrying while Redis is unavailable and the socket is open."""
    while True:
        try:
            return await read(*args)
        except StoreUnavailable as e:
            if not isinstance(e, StoreRefused):  # a refusal is logged by the store, once per episode
                logger.warning("WebSocket catch-up waiting for Redis: %s", e)
            if ws.closed:
                raise ConnectionError("socket closed") from e
            await asyncio.sleep(_CATCH_UP_RETRY)


class JobFeed:
    """One job: snapshot or missed events, then live events in version order, without duplicates."""

    def __init__(
        self, store: JobStore, hub: EventHub, job_id: str, since: int | None, *, until_expired: bool = False
    ) -> None:
        self.store = store
        self.hub = hub
        self.job_id = job_id
        self.since = since
        self.until_expired = until_expired
        self.gone = False

    async def run(self, ws: Outbox, sub: Subscription) -> None:
        await self.hub.ready(sub, _READY_WAIT)
        last = await self.catch_up(ws, self.since, sub)
        while True:
            item = await sub.queue.get()
            if item is RESYNC:
                # The listener subscribed anew: send the state afresh rather than trust the gap is empty.
                await self.hub.ready(sub, _READY_WAIT)
                last = await self.catch_up(ws, None, sub)
                continue
            assert isinstance(item, Event)
            if item.version <= last:
                continue
            if item.version > last + 1:
                last = await self.catch_up(ws, last)
                if self.until_expired and self.gone:
                    await _close(ws.ws, WSCloseCode.OK, b"job expired")
                    return
                continue
            await ws.text(item.raw)
            last = item.version
            if self.until_expired and item.type == "job.expired":
                await _close(ws.ws, WSCloseCode.OK, b"job expired")
                return

    async def catch_up(self, ws: Outbox, since: int | None, sub: Subscription | None = None) -> int:
        """Send what the client lacks after ``since``; returns the last version it now has. With ``sub`` (no
        event taken from its queue waits on this), the job may be read once for every socket catching up on
        it at once (EventHub.shared)."""
        if since is not None:
            missed = await _retrying(ws, self.store.events_since, self.job_id, since)
            if missed is not None:
                for _, raw in missed:
                    await ws.text(raw)
                return missed[-1][0] if missed else since
        if sub is not None:
            shared = await _retrying(ws, self.hub.shared, sub, f"job:{self.job_id}", self._read)
        else:
            shared = await _retrying(ws, self._read)
        job = shared.job
        self.gone = job is None
        version = job.version if job else 0
        snapshot = {"type": "snapshot", "jobId": self.job_id, "version": version, "at": iso_ms(now_ms())}
        await ws.text(dumps({**snapshot, "job": RawJSON(shared.encoded)}))
        return version

    async def _read(self) -> SharedJob:
        return SharedJob(await self.store.find_job(self.job_id))


class SharedJob:
    """A job as its sockets' snapshots show it, shared by those that catch up at once (EventHub.shared) and
    encoded once for all of them: it may carry a schema of megabytes."""

    def __init__(self, job: Job | None) -> None:
        self.job = job

    @functools.cached_property
    def encoded(self) -> str:
        return dumps(job_detail(self.job)) if self.job else "null"


class AllFeed:
    """Every job: a snapshot of the recent jobs, then every event; per job in version order."""

    def __init__(
        self, store: JobStore, hub: EventHub, snapshot_jobs: int, allow: Callable[[str], bool] | None = None
    ) -> None:
        self.store = store
        self.hub = hub
        self.snapshot_jobs = snapshot_jobs
        # Only the jobs a token's `jobs` patterns cover, when it has any.
        self.allow = allow
        self.last: OrderedDict[str, int] = OrderedDict()

    async def run(self, ws: Outbox, sub: Subscription) -> None:
        await self.hub.ready(sub, _READY_WAIT)
        await self.snapshot(ws, sub)
        while True:
            item = await sub.queue.get()
            if item is RESYNC:
                await self.hub.ready(sub, _READY_WAIT)
                await self.snapshot(ws, sub)
                continue
            assert isinstance(item, Event)
            if self.allow is not None and not self.allow(item.job_id):
                continue
            previous = self.last.get(item.job_id)
            if previous is None and item.type != "job.created":
                # A job this socket knows nothing of (older than its snapshot): send the job itself,
                # an event alone would leave the client guessing its counts and times.
                await self.send_job(ws, item.job_id, item.version)
                continue
            if previous is not None and item.version <= previous:
                continue
            if previous is not None and item.version > previous + 1:
                await self.fill_gap(ws, item.job_id, previous)
                continue
            await ws.text(item.raw)
            self._seen(item.job_id, item.version)

    async def fill_gap(self, ws: Outbox, job_id: str, previous: int) -> None:
        """Events of a job were missed: send them from its history, or the job afresh."""
        missed = await _retrying(ws, self.store.events_since, job_id, previous)
        if missed is not None:
            for version, raw in missed:
                await ws.text(raw)
                self._seen(job_id, version)
            return
        await self.send_job(ws, job_id, previous)

    async def send_job(self, ws: Outbox, job_id: str, fallback_version: int) -> None:
        job = await _retrying(ws, self.store.job_summary, job_id)
        version = job.version if job else fallback_version
        message = {"type": "job.snapshot", "jobId": job_id, "version": version, "at": iso_ms(now_ms())}
        await ws.json({**message, "job": job_summary(job) if job else None})
        self._seen(job_id, version)

    def _seen(self, job_id: str, version: int) -> None:
        self.last[job_id] = version
        self.last.move_to_end(job_id)
        if len(self.last) > _MAX_TRACKED_JOBS:
            self.last.popitem(last=False)

    async def _recent(self) -> RecentJobs:
        jobs, _ = await self.store.list_jobs(status=None, limit=self.snapshot_jobs, cursor=None)
        return RecentJobs([job_summary(job) for job in jobs])

    async def snapshot(self, ws: Outbox, sub: Subscription) -> None:
        # Read, shaped and encoded once for every socket of this process that catches up at once.
        recent = await _retrying(ws, self.hub.shared, sub, f"recent:{self.snapshot_jobs}", self._recent)
        jobs = recent.jobs if self.allow is None else [job for job in recent.jobs if self.allow(job["jobId"])]
        self.last.clear()
        for job in reversed(jobs):
            self._seen(job["jobId"], job["version"])
        at = iso_ms(now_ms())
        if self.allow is None:
            await ws.text(dumps({"type": "snapshot", "at": at, "jobs": RawJSON(recent.encoded)}))
        else:
            await ws.json({"type": "snapshot", "at": at, "jobs": jobs})


class RecentJobs:
    """The /ws snapshot's jobs (summaries, newest first), shared by the sockets that catch up at once
    (EventHub.shared), and encoded once for all of them that send every one."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs

    @functools.cached_property
    def encoded(self) -> str:
        return json.dumps(self.jobs)
