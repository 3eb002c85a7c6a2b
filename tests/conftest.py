from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.app import create_app
from orchestrator.settings import Settings
from tests.fake_coordinator import FakeCoordinator
from tests.support import RedisServerProcess

REAL_REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")
# CI sets this so that an unreachable real Redis fails the run instead of skipping its tests.
REQUIRE_REAL_REDIS = os.environ.get("REQUIRE_REAL_REDIS") == "1"


async def connect_real_redis() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REAL_REDIS_URL, decode_responses=True, socket_timeout=5)
    try:
        await client.ping()
    except (RedisConnectionError, OSError) as e:
        await client.aclose()
        message = f"real Redis at {REAL_REDIS_URL} unreachable: {e}"
        if REQUIRE_REAL_REDIS:
            pytest.fail(message)
        pytest.skip(message)
    return client


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        await client.delete(key)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never trip on each other's keys in a shared Redis."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture(params=["fakeredis", "real-redis"])
async def redis_client(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[aioredis.Redis]:
    """The same tests run on the embedded fakeredis and on the real Redis server."""
    if request.param == "fakeredis":
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
        yield client
        await client.aclose()
        return
    client = await connect_real_redis()
    yield client
    await delete_prefix(client, prefix)
    await client.aclose()


@pytest.fixture
async def real_redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = await connect_real_redis()
    yield client
    await delete_prefix(client, prefix)
    await client.aclose()


@pytest.fixture
def settings(prefix: str, tmp_path: Path) -> Settings:
    # No aggregation workers: these tests look at jobs as they reach AGGREGATING; the aggregation tests
    # turn workers on.
    return Settings(
        key_prefix=prefix,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        janitor_interval_seconds=3600,
        aggregation_workers=0,
    )


@pytest.fixture
def make_client(
    redis_client: aioredis.Redis, settings: Settings, aiohttp_client: Callable[..., Any]
) -> Callable[..., Any]:
    # aiohttp_client comes last so that its apps are shut down before the Redis client is closed.
    async def make(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(settings.with_overrides(**overrides), redis=redis_client))  # type: ignore[no-any-return]

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await make_client()  # type: ignore[no-any-return]


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServerProcess]:
    """A redis-server of the test's own, on its own port, which the test may stop, hang or restart."""
    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def coordinator() -> FakeCoordinator:
    """A fake SMPC coordinator: a real aiohttp app (started by agg_client) on a loopback port."""
    return FakeCoordinator()


@pytest.fixture
def agg_client(
    redis_client: aioredis.Redis,
    settings: Settings,
    coordinator: FakeCoordinator,
    aiohttp_server: Callable[..., Any],
    aiohttp_client: Callable[..., Any],
) -> Callable[..., Any]:
    async def make(port: int | None = None, **overrides: Any) -> TestClient[Any, Any]:
        server: TestServer = await aiohttp_server(coordinator.app())
        options: dict[str, Any] = {
            "smpc_coordinator_url": str(server.make_url("")).rstrip("/"),
            "aggregation_backend": "smpc",
            "aggregation_workers": 4,
            "smpc_poll_interval_seconds": 0.05,
            "smpc_poll_max_interval_seconds": 0.2,
            "smpc_request_timeout_seconds": 1.0,
            "aggregation_sweep_seconds": 0.2,
            **overrides,
        }
        app = create_app(settings.with_overrides(**options), redis=redis_client)
        return await aiohttp_client(app, server_kwargs={"port": port} if port else None)  # type: ignore[no-any-return]

    return make
