"""Exactly once and crash-safe: aggregation across service processes sharing one real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.aggregation.queue import GROUP
from orchestrator.keys import Keys
from tests.conftest import REAL_REDIS_URL
from tests.fake_coordinator import FakeCoordinator
from tests.support import DETAILED_SCHEMA, service_instances

pytestmark = pytest.mark.real_redis
OUTPUT = [1000, 54, 240, 135.6, 90, 135, 180, 1000, 750, 900]


@pytest.fixture
async def coordinator_url(aiohttp_server: Callable[..., Any]) -> AsyncIterator[tuple[FakeCoordinator, str]]:
    coordinator = FakeCoordinator()
    server = await aiohttp_server(coordinator.app())
    yield coordinator, str(server.make_url("")).rstrip("/")


def service_env(prefix: str, coordinator: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": REAL_REDIS_URL,
        "KEY_PREFIX": prefix,
        "ACCESS_LOG": "false",
        "SMPC_COORDINATOR_URL": coordinator,
        "SMPC_POLL_INTERVAL": "0.05",
        "SMPC_POLL_MAX_INTERVAL": "0.2",
        **extra,
    }


async def completed_events(redis: aioredis.Redis, keys: Keys, job: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in await redis.lrange(keys.events(job), 0, -1) if '"job.completed"' in e]


async def wait_finished(session: aiohttp.ClientSession, base: str, job: str, within: float = 20) -> dict[str, Any]:
    for _ in range(int(within / 0.1)):
        async with session.get(f"{base}/api/job-status/{job}") as resp:
            status = await resp.json()
        if status.get("status") in ("COMPLETED", "FAILED"):
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{job} did not finish: {status}")


async def test_concurrent_last_updates_trigger_once(
    coordinator_url: tuple[FakeCoordinator, str], real_redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    coordinator, url = coordinator_url
    jobs = ["big", *(f"small-{n}" for n in range(20))]
    for job in jobs:
        coordinator.outputs[job] = OUTPUT
    env = service_env(prefix, url)
    async with service_instances(env, tmp_path) as instances:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def send(job: str, client: int, total: int) -> int:
                body = {"jobId": job, "clientId": f"c{client}", "totalClients": total, "schema": DETAILED_SCHEMA}
                async with session.post(f"{instances[client % 2].base}/api/update", json=body) as resp:
                    return resp.status

            # One job whose 50 updates all race to be the last, and 20 jobs of 5 at once.
            sends = [send("big", c, 50) for c in range(50)] + [send(j, c, 5) for j in jobs[1:] for c in range(5)]
            assert set(await asyncio.gather(*sends)) == {200}
            statuses = await asyncio.gather(*(wait_finished(session, instances[0].base, j) for j in jobs))
        assert {s["status"] for s in statuses} == {"COMPLETED"}
        await asyncio.sleep(0.5)  # let any duplicate (there must be none) show up
        assert dict(coordinator.triggers) == dict.fromkeys(jobs, 1)
        keys = Keys(prefix)
        for job in jobs:
            assert len(await completed_events(real_redis, keys, job)) == 1
        assert await real_redis.xlen(keys.aggregation_queue) == 0


async def test_worker_killed_after_triggering_another_finishes(
    coordinator_url: tuple[FakeCoordinator, str], real_redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    coordinator, url = coordinator_url
    coordinator.hold = asyncio.Event()
    coordinator.outputs["crash"] = OUTPUT
    env = service_env(prefix, url, AGGREGATION_CLAIM_IDLE="1.5")
    keys = Keys(prefix)
    async with service_instances(env, tmp_path) as instances:
        async with aiohttp.ClientSession() as session:
            for c in range(3):
                body = {"jobId": "crash", "clientId": f"c{c}", "totalClients": 3, "schema": DETAILED_SCHEMA}
                async with session.post(f"{instances[0].base}/api/update", json=body) as resp:
                    assert resp.status == 200
            await asyncio.wait_for(coordinator.triggered.wait(), 10)
            # The worker that triggered is the one holding the queue entry: kill its process outright.
            for _ in range(50):
                if await real_redis.hget(keys.job("crash"), "coordinatorTriggeredAt"):
                    break
                await asyncio.sleep(0.05)
            pending = await real_redis.xpending_range(keys.aggregation_queue, GROUP, min="-", max="+", count=10)
            assert len(pending) == 1
            consumer = pending[0]["consumer"]
            assert isinstance(consumer, str)
            owner_pid = int(consumer.split("-")[-2])
            victim = next(i for i in instances if i.proc.pid == owner_pid)
            survivor = next(i for i in instances if i is not victim)
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(5)
            coordinator.hold.set()
            status = await wait_finished(session, survivor.base, "crash")
        assert status["status"] == "COMPLETED"
        assert {f["featureName"] for f in status["aggregatedResults"]} == {"age", "isActive", "department"}
        assert coordinator.triggers["crash"] == 1
        assert await real_redis.hget(keys.job("crash"), "attempt") == "2"
        assert len(await completed_events(real_redis, keys, "crash")) == 1
        assert await real_redis.xlen(keys.aggregation_queue) == 0
