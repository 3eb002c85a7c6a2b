"""Consumer-group membership stays bounded: a worker leaves its groups on a clean shutdown when it holds
nothing, and consumers silent for long with nothing pending (a process that was killed) are reaped. A consumer
with entries pending is never removed (its entries would go with it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.aggregation.queue import GROUP, aggregation_queue
from orchestrator.app import create_app
from orchestrator.keys import Keys
from orchestrator.metrics import Metrics
from orchestrator.queueworkers import QueueWorkers
from orchestrator.results.worker import GROUP as DELIVERY_GROUP
from orchestrator.settings import Settings
from orchestrator.store import JobStore
from orchestrator.workqueue import WorkQueue


@pytest.fixture
def store(redis_client: aioredis.Redis, prefix: str) -> JobStore:
    return JobStore(
        redis_client,
        Settings(key_prefix=prefix, job_ttl_seconds=3600, event_history=5, enable_filesystem_saving=False),
        metrics=Metrics(),
    )


async def consumers(redis: aioredis.Redis, stream: str, group: str) -> dict[str, int]:
    """Each consumer of the group and how many entries it has pending."""
    try:
        return {c["name"]: int(c["pending"]) for c in await redis.xinfo_consumers(stream, group)}
    except aioredis.ResponseError:
        return {}


async def test_an_app_started_and_stopped_leaves_no_consumer_behind(
    redis_client: aioredis.Redis, settings: Settings, prefix: str, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    groups = [(keys.aggregation_queue, GROUP), (keys.delivery_queue, DELIVERY_GROUP)]
    # REDIS_TIMEOUT 0.4 s: the readers block for 0.2 s. fakeredis finishes a cancelled blocking read in the
    # background (for as long as it blocks), and would hand the next run's entry to the stopped consumer.
    config = settings.with_overrides(
        aggregation_workers=2, delivery_workers=2, enable_api_sending=False, redis_timeout=0.4
    )
    for run in range(3):
        async with TestClient(TestServer(create_app(config, redis=redis_client))) as client:
            for cid in ("c1", "c2"):
                body = {"jobId": f"job{run}", "clientId": cid, "totalClients": 2}
                assert (await client.post("/api/update", json=body)).status == 200
            for _ in range(200):
                status = await (await client.get(f"/api/job-status/job{run}")).json()
                if (status.get("deliveries") or {}).get("file", {}).get("state") == "delivered":
                    break
                await asyncio.sleep(0.02)
            assert status["status"] == "COMPLETED", status
            for stream, group in groups:
                assert len(await consumers(redis_client, stream, group)) == 1
        await asyncio.sleep(0.3)
        for stream, group in groups:
            assert await consumers(redis_client, stream, group) == {}


async def test_silent_consumers_with_nothing_pending_are_reaped(redis_client: aioredis.Redis, store: JobStore) -> None:
    queue = aggregation_queue(store, "me")
    await queue.ensure_group()
    stream = store.keys.aggregation_queue
    await redis_client.xadd(stream, {"jobId": "held"})
    await redis_client.xreadgroup(GROUP, "busy", {stream: ">"}, count=1)  # dead, with an entry pending
    await redis_client.xgroup_createconsumer(stream, GROUP, "empty")  # dead, holding nothing
    await asyncio.sleep(0.3)
    await redis_client.xgroup_createconsumer(stream, GROUP, "fresh")  # alive, holding nothing
    await redis_client.xgroup_createconsumer(stream, GROUP, "me")
    assert await queue.reap_idle_consumers(200) == ["empty"]
    assert await consumers(redis_client, stream, GROUP) == {"busy": 1, "fresh": 0, "me": 0}
    # The entry of the dead one can still be taken over.
    claimed = await queue.claim_stale(0, 10)
    assert [fields for _, fields in claimed] == [{"jobId": "held"}]
    # A stream or group that does not exist (yet) has nobody to reap.
    assert await WorkQueue(store, "other", stream=f"{stream}-missing", group=GROUP).reap_idle_consumers(0) == []
    assert await WorkQueue(store, "other", stream=stream, group="missing").reap_idle_consumers(0) == []


class Holding(QueueWorkers):
    """Workers whose handler holds its entry until cancelled."""

    def __init__(self, queue: WorkQueue) -> None:
        super().__init__(queue, slots=1, claim_idle=60)
        self.started = asyncio.Event()

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_a_worker_stopped_with_an_entry_pending_stays_in_the_group(
    redis_client: aioredis.Redis, store: JobStore
) -> None:
    workers = Holding(aggregation_queue(store, "holder"))
    stream = store.keys.aggregation_queue
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run(stop))
    await redis_client.xadd(stream, {"jobId": "j"})
    await asyncio.wait_for(workers.started.wait(), 5)
    stop.set()
    await task
    assert await consumers(redis_client, stream, GROUP) == {"holder": 1}


async def test_the_workers_reap_periodically(redis_client: aioredis.Redis, store: JobStore) -> None:
    queue = aggregation_queue(store, "me")
    await queue.ensure_group()
    stream = store.keys.aggregation_queue
    await redis_client.xgroup_createconsumer(stream, GROUP, "gone")
    workers: Any = QueueWorkers(queue, slots=0, claim_idle=60)
    assert workers.reap_idle == 3600.0  # the default bound: an hour, or ten claim-idle times
    workers.reap_idle, workers.reap_interval = 0.2, 0.05
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run(stop))
    try:
        for _ in range(100):
            if "gone" not in await consumers(redis_client, stream, GROUP):
                break
            await asyncio.sleep(0.05)
        assert await consumers(redis_client, stream, GROUP) == {}
    finally:
        stop.set()
        await task
