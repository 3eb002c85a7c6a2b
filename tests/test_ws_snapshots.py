"""Listings and WebSocket snapshots read the jobs' summary fields only, and sockets that re-sync at once
share one read: on fakeredis and the real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from orchestrator.hub import EventHub
from orchestrator.metrics import Metrics
from orchestrator.models import JobStatus, UpdateRequest
from orchestrator.serializers import job_summary
from orchestrator.settings import Settings
from orchestrator.store import JobStore
from orchestrator.typedefs import HUB, METRICS, STORE
from tests.test_ws import receive

Client = TestClient[Any, Any]
BIG = 200_000


@pytest.fixture
def store(redis_client: aioredis.Redis, prefix: str) -> JobStore:
    return JobStore(
        redis_client,
        Settings(key_prefix=prefix, job_ttl_seconds=3600, event_history=5, enable_filesystem_saving=False),
        metrics=Metrics(),
    )


async def big_jobs(store: JobStore, count: int) -> None:
    """``count`` jobs whose stored schema and result are BIG bytes each (written straight into the job hash:
    how they got so big is not the point here)."""
    for n in range(count):
        await store.record_update(UpdateRequest(job_id=f"big{n}", client_id="a", total_clients=2, schema_json=None))
        await store.redis.hset(
            store.keys.job(f"big{n}"),
            mapping={
                "schema": json.dumps([{"name": "x" * BIG, "dataType": "NUMERIC"}]),
                "finalResult": json.dumps({"blob": "r" * BIG}),
            },
        )


def replies_measured(redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size (of the repr) of every pipeline's replies from now on."""
    sizes: list[int] = []
    make = redis.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        execute = pipe.execute

        async def measured(*a: Any, **k: Any) -> Any:
            replies = await execute(*a, **k)
            sizes.append(len(repr(replies)))
            return replies

        pipe.execute = measured  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(redis, "pipeline", pipeline)
    return sizes


async def test_a_listing_reads_summary_fields_only(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await big_jobs(store, 50)
    sizes = replies_measured(store.redis, monkeypatch)
    jobs, _ = await store.list_jobs(status=None, limit=100, cursor=None)
    assert sorted(job.job_id for job in jobs) == sorted(f"big{n}" for n in range(50))
    assert all(job.schema is None and job.final_result is None for job in jobs)
    # 50 summaries, not 50 x 400 KB.
    assert 0 < sum(sizes) < 50 * 400, sizes
    # The summaries are those of the full jobs.
    for job in jobs[:3]:
        assert job_summary(job) == job_summary(await store.get_job(job.job_id))
    only, _ = await store.list_jobs(status=JobStatus.AGGREGATING, limit=100, cursor=None)
    assert only == []
    summary = await store.job_summary("big7")
    listed = next(job for job in jobs if job.job_id == "big7")
    assert summary is not None and summary.schema is None and job_summary(summary) == job_summary(listed)
    assert await store.job_summary("none") is None


def operations(client: Client, operation: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(
        "orchestrator_redis_duration_seconds_count", {"operation": operation}
    )
    return value or 0.0


async def resync(client: Client) -> None:
    """What redis-py does when it re-establishes the listener's connection by itself: the hub starts a new
    session and every socket re-syncs."""
    hub = client.app[HUB]
    session = hub.session
    hub._on_reconnect(None)
    for _ in range(100):
        if hub.session > session:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the listener did not start a new session")


async def test_sockets_resyncing_at_once_share_one_snapshot_read(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(access_log=False)
    for n in range(3):
        resp = await client.post("/api/update", json={"jobId": f"s{n}", "clientId": "a", "totalClients": 2})
        assert resp.status == 200
    sockets = [await client.ws_connect("/ws") for _ in range(20)]
    job_sockets = [await client.ws_connect("/ws/jobs/s1") for _ in range(20)]
    try:
        for ws in sockets:
            assert [job["jobId"] for job in (await receive(ws))["jobs"]] == ["s2", "s1", "s0"]
        for ws in job_sockets:
            assert (await receive(ws))["version"] == 2
        listings, reads = operations(client, "list_jobs"), operations(client, "get_job")
        await resync(client)
        for ws in sockets:
            snapshot = await receive(ws)
            assert (snapshot["type"], [job["jobId"] for job in snapshot["jobs"]]) == ("snapshot", ["s2", "s1", "s0"])
        for ws in job_sockets:
            snapshot = await receive(ws)
            assert (snapshot["type"], snapshot["version"], snapshot["job"]["doneCount"]) == ("snapshot", 2, 1)
        assert operations(client, "list_jobs") - listings == 1
        assert operations(client, "get_job") - reads == 1
        # And on they go with the events.
        assert (
            await client.post("/api/update", json={"jobId": "s1", "clientId": "b", "totalClients": 2})
        ).status == 200
        for ws in sockets + job_sockets:
            assert (await receive(ws))["type"] == "client.done"
    finally:
        for ws in sockets + job_sockets:
            await ws.close()


async def test_a_socket_newer_than_a_read_does_not_share_it() -> None:
    """A read that started before a socket subscribed may lack what changed before the socket's queue
    began: that socket reads afresh; one that subscribed before it may share it."""
    hub = EventHub(None, Settings(), channel="events")  # type: ignore[arg-type]
    release = asyncio.Event()
    reads: list[int] = []

    async def read() -> int:
        number = len(reads) + 1
        reads.append(number)
        await release.wait()
        return number

    with hub.subscribe(None) as early, hub.subscribe(None) as earlier:
        first = asyncio.create_task(hub.shared(early, "x", read))
        await asyncio.sleep(0)
        with hub.subscribe(None) as late:
            joined = asyncio.create_task(hub.shared(earlier, "x", read))
            fresh = asyncio.create_task(hub.shared(late, "x", read))
            await asyncio.sleep(0)
            release.set()
            assert (await first, await joined, await fresh) == (1, 1, 2)
        # A socket closing while it waits does not cancel the read the others wait on.
        release.clear()
        with hub.subscribe(None) as a, hub.subscribe(None) as b:
            waiting = asyncio.create_task(hub.shared(a, "y", read))
            other = asyncio.create_task(hub.shared(b, "y", read))
            await asyncio.sleep(0)
            waiting.cancel()
            release.set()
            assert await other == 3
    assert len(reads) == 3
    await asyncio.sleep(0)
    assert not hub._shared  # a finished read (a job with its schema, say) is not held on to


async def test_the_ws_listing_sends_summaries(client: Client) -> None:
    store: JobStore = client.app[STORE]
    await big_jobs(store, 3)
    async with client.ws_connect("/ws") as ws:
        snapshot = await receive(ws)
    assert [job["jobId"] for job in snapshot["jobs"]] == ["big2", "big1", "big0"]
    assert all("schema" not in job and "finalResult" not in job for job in snapshot["jobs"])
    listing = await (await client.get("/api/jobs")).json()
    assert listing["jobs"] == snapshot["jobs"]
