"""Exactly-once and no-lost-update claims, hammered on two service processes sharing one real Redis."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.keys import Keys
from tests.conftest import REAL_REDIS_URL
from tests.support import ServiceProcess, service_instances

pytestmark = pytest.mark.real_redis


@pytest.fixture
async def instances(real_redis: aioredis.Redis, prefix: str, tmp_path: Path) -> AsyncIterator[list[ServiceProcess]]:
    env = {"REDIS_URL": REAL_REDIS_URL, "KEY_PREFIX": prefix, "ACCESS_LOG": "false", "AGGREGATION_WORKERS": "0"}
    async with service_instances(env, tmp_path) as procs:
        yield procs


async def collect_events(
    redis: aioredis.Redis, channel: str, stop: asyncio.Event, into: list[dict[str, object]]
) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    try:
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                into.append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()


async def test_fifty_clients_three_times_each_on_two_instances(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    events: list[dict[str, object]] = []
    stop = asyncio.Event()
    listener = asyncio.create_task(collect_events(real_redis, keys.events_channel, stop, events))
    await asyncio.sleep(0.2)
    sends = [(f"client_{i:02d}", instances[(i + n) % 2].base) for i in range(50) for n in range(3)]
    random.Random(7).shuffle(sends)
    schema = [{"name": "age", "dataType": "NUMERIC"}, {"name": "isActive", "dataType": "BOOLEAN"}]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(client_id: str, base: str) -> tuple[int, dict[str, Any]]:
            body = {"jobId": "hammer", "clientId": client_id, "totalClients": 50, "schema": schema}
            async with session.post(f"{base}/api/update", json=body) as resp:
                return resp.status, await resp.json()

        results = await asyncio.gather(*(send(c, b) for c, b in sends))
        status = await (await session.get(f"{instances[1].base}/api/job-status/hammer")).json()
    await asyncio.sleep(0.5)
    stop.set()
    await listener

    assert {code for code, _ in results} == {200}
    recorded = [body for _, body in results if body["alreadyRecorded"] is False]
    assert len(recorded) == 50
    assert sorted(body["doneCount"] for body in recorded) == list(range(1, 51))
    assert status["status"] == "AGGREGATING"
    assert status["progress"]["doneCount"] == 50
    assert sorted(status["jobInfo"]["updatedClients"]) == sorted({c for c, _ in sends})
    # The transition and its hand-off happened exactly once.
    assert await real_redis.xlen(keys.aggregation_queue) == 1
    types = [e["type"] for e in events]
    assert types.count("job.created") == 1
    assert types.count("client.done") == 50
    assert types.count("job.aggregating") == 1
    assert [e["version"] for e in events] == list(range(1, 53))


async def test_racing_first_updates_never_reset_a_job(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str
) -> None:
    """The original lost updates when two 'first' updates raced: each created the job afresh."""
    jobs = [f"race-{n}" for n in range(40)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def send(job: str, client: int) -> int:
            body = {"jobId": job, "clientId": f"c{client}", "totalClients": 5}
            async with session.post(f"{instances[client % 2].base}/api/update", json=body) as resp:
                return resp.status

        codes = await asyncio.gather(*(send(job, c) for job in jobs for c in range(4)))
        assert set(codes) == {200}
        for job in jobs:
            body = await (await session.get(f"{instances[0].base}/api/jobs/{job}")).json()
            assert body["doneCount"] == 4, body
            assert body["status"] == "IN_PROGRESS"
            assert sorted(c["clientId"] for c in body["clients"]) == ["c0", "c1", "c2", "c3"]
            assert body["version"] == 5
    assert await real_redis.xlen(Keys(prefix).aggregation_queue) == 0
