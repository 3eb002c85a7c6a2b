"""The service on each kind of Redis URL it accepts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.app import create_app
from orchestrator.settings import Settings
from tests.support import RedisServerProcess

pytestmark = pytest.mark.real_redis


async def test_unix_socket_url(aiohttp_client: Callable[..., Any], tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = RedisServerProcess(tmp_path / "redis", "--unixsocket", str(socket_path), "--unixsocketperm", "700")
    server.start()
    try:
        settings = Settings(
            redis_url=f"unix://{socket_path}?db=3",
            log_dir=str(tmp_path / "logs"),
            results_save_path=str(tmp_path / "results"),
            aggregation_workers=0,
        )
        client = await aiohttp_client(create_app(settings))
        resp = await client.post("/api/update", json={"jobId": "u", "clientId": "c", "totalClients": 1})
        assert resp.status == 200
        assert (await (await client.get("/api/job-status/u")).json())["status"] == "AGGREGATING"
        assert (await client.get("/readyz")).status == 200
    finally:
        server.kill()


async def test_unreachable_redis_at_start_is_not_fatal(aiohttp_client: Callable[..., Any], tmp_path: Path) -> None:
    """The service starts, says Redis is not ready, and answers 503 until it is."""
    from tests.support import free_port

    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_timeout=0.5,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
    )
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert ready.headers["Retry-After"] == "1"
    resp = await client.post("/api/update", json={"jobId": "u", "clientId": "c", "totalClients": 1})
    assert resp.status == 503
    assert (await client.get("/metrics")).status == 200
