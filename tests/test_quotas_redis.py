"""The memory guard on a private redis-server with a maxmemory: new jobs get 507 near it while what exists
goes on, and one client sending large schemas is stopped well before Redis is full."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from orchestrator.app import create_app
from orchestrator.quotas import MemoryGuard
from orchestrator.settings import Settings
from orchestrator.typedefs import MEMORY
from tests.support import RedisServerProcess
from tests.test_quotas import big_schema, error_of, update

pytestmark = pytest.mark.real_redis

MAXMEMORY = 32 * 1024 * 1024


@pytest.fixture
async def small_redis(tmp_path: Path) -> AsyncIterator[RedisServerProcess]:
    server = RedisServerProcess(
        tmp_path / "redis", "--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction", "--appendonly", "no"
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def raw(small_redis: RedisServerProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(small_redis.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], small_redis: RedisServerProcess, tmp_path: Path
) -> TestClient[Any, Any]:
    # The production defaults (MAX_REDIS_MEMORY_FRACTION=0.9, the default rate limits and job quotas).
    settings = Settings(
        redis_url=small_redis.url,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=0,
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def used_memory(raw: aioredis.Redis) -> int:
    return int((await raw.info("memory"))["used_memory"])


async def test_near_maxmemory_new_jobs_get_507_and_the_rest_goes_on(
    client: TestClient[Any, Any], raw: aioredis.Redis
) -> None:
    assert (await client.post("/api/update", json=update("old", "a", total=3))).status == 200
    chunk = "x" * (1024 * 1024)
    n = 0
    while await used_memory(raw) < 0.92 * MAXMEMORY:
        await raw.set(f"filler:{n}", chunk)
        n += 1
    assert await client.app[MEMORY].sample()
    refused = await client.post("/api/update", json=update("new", "a"))
    assert await error_of(refused) == (507, "storage_full")
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await client.get("/api/jobs/new")).status == 404
    # An existing job still takes updates, and is read and cancelled.
    assert (await client.post("/api/update", json=update("old", "b", total=3))).status == 200
    status = await (await client.get("/api/job-status/old")).json()
    assert status["progress"]["doneCount"] == 2
    assert (await client.get("/api/jobs")).status == 200
    assert (await client.post("/api/jobs/old/cancel")).status == 200
    # Memory freed: new jobs again, once the guard has seen it.
    await raw.delete(*(f"filler:{i}" for i in range(n)))
    assert await client.app[MEMORY].sample()
    assert (await client.post("/api/update", json=update("new", "a"))).status == 200


async def test_one_client_with_large_schemas_is_stopped_well_before_redis_is_full(
    client: TestClient[Any, Any], raw: aioredis.Redis
) -> None:
    # The attack that filled a 250 MB Redis in 11.3 s, scaled down: one client, new jobs with schemas of
    # 256 KB as fast as it can, within the default rate limits.
    schema = big_schema(256 * 1024)
    created, outcome = 0, None
    for n in range(MAXMEMORY // (256 * 1024)):  # enough to fill Redis twice over (a job keeps its schema twice)
        resp = await client.post("/api/update", json=update(f"attack-{n}", "mallory", schema=schema))
        if resp.status != 200:
            outcome = await error_of(resp)
            break
        created += 1
    assert outcome == (507, "storage_full"), (created, outcome)
    used = await used_memory(raw)
    assert used < 0.93 * MAXMEMORY, used
    assert created > 10
    # Nothing was refused by Redis itself (no OOM): the existing jobs go on.
    assert (await client.post("/api/update", json=update("attack-0", "bob", schema=schema))).status == 200
    assert (await client.get("/api/jobs/attack-0")).status == 200


async def test_a_redis_the_guard_cannot_protect_is_said_once(
    private_redis: RedisServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """No maxmemory (Redis' default): the guard has nothing to guard by; an evicting policy: jobs would be
    dropped. Each is a warning, once."""
    raw = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        guard = MemoryGuard(raw, Settings().with_overrides(max_redis_memory_fraction=0.9))
        for _ in range(3):
            assert await guard.sample()
        await raw.config_set("maxmemory", str(64 * 1024 * 1024))
        await raw.config_set("maxmemory-policy", "allkeys-lru")
        for _ in range(3):
            assert await guard.sample()
    finally:
        await raw.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "orchestrator.quotas"]
    assert len(warnings) == 2, warnings
    assert "no maxmemory" in warnings[0] and "allkeys-lru" in warnings[1]
