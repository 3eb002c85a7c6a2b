"""What one WebSocket is sent: a snapshot (or the events it missed), then live events in version order.

A feed reads the store to catch a socket up and its Subscription's queue for what happens next; reads
that several sockets need at once are shared (EventHub.shared) and encoded once for all of them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import WSCloseCode

from orchestrator.hub import RESYNC, Event, EventHub, Subscription
from orchestrator.models import Job, iso_ms
from orchestrator.serializers import RawJSON, dumps, job_detail, job_summary
from orchestrator.sockets import Outbox, close_socket
from orchestrator.store import JobStore, StoreRefused, StoreUnavailable, now_ms

logger = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_TRACKED_JOBS = 10_000
_CATCH_UP_RETRY = 1.0
# How long a new socket waits for the process's event listener to subscribe before it reads the state
# anyway (Redis is down, say); it then gets a fresh snapshot once the listener is subscribed.
_READY_WAIT = 2.0


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
                    await close_socket(ws.ws, WSCloseCode.OK, b"job expired")
                    return
                continue
            await ws.text(item.raw)
            last = item.version
            if self.until_expired and item.type == "job.expired":
                await close_socket(ws.ws, WSCloseCode.OK, b"job expired")
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
