"""REDIS_TIMEOUT bounds what a request waits for a hung Redis (once, not once per call), and the idle queue
readers work with any REDIS_TIMEOUT (their block is derived from it)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from orchestrator.app import create_app
from orchestrator.settings import Settings
from orchestrator.workqueue import read_block_ms
from tests.conftest import REAL_REDIS_URL
from tests.support import RedisServerProcess

pytestmark = pytest.mark.real_redis
Client = TestClient[Any, Any]


async def timed(call: Any) -> tuple[int, float]:
    started = time.monotonic()
    resp = await call
    return resp.status, time.monotonic() - started


async def test_a_write_to_a_hung_redis_answers_503_within_one_timeout(
    aiohttp_client: Callable[..., Any], private_redis: RedisServerProcess, tmp_path: Path
) -> None:
    timeout = 1.0
    settings = Settings(
        redis_url=private_redis.url,
        redis_timeout=timeout,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=0,
    )
    client: Client = await aiohttp_client(create_app(settings))
    body = {"jobId": "hung", "clientId": "c1", "totalClients": 3}
    assert (await client.post("/api/update", json=body)).status == 200
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        # The write, then the audit entry of its refusal: one wait for Redis between them, not two.
        for call in (
            client.post("/api/update", json={**body, "clientId": "c2"}),
            client.post("/api/jobs/hung/cancel"),
            client.get("/api/job-status/hung"),
        ):
            status, elapsed = await timed(call)
            assert status == 503
            assert elapsed < 1.5 * timeout, elapsed
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    # Nothing lingers: the next request waits for nothing.
    assert (await client.post("/api/update", json={**body, "clientId": "c2"})).status == 200
    status_body = await (await client.get("/api/job-status/hung")).json()
    assert status_body["progress"]["doneCount"] == 2


async def test_queue_workers_keep_working_with_a_short_redis_timeout(
    real_redis: aioredis.Redis,  # first, so that the app below is stopped before its keys are deleted
    aiohttp_client: Callable[..., Any],
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The app makes its own client, so its socket timeout is REDIS_TIMEOUT (0.5 s, below the 1 s block the
    # readers had).
    settings = Settings(
        redis_url=REAL_REDIS_URL,
        redis_timeout=0.5,
        key_prefix=prefix,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=2,
        delivery_workers=2,
        enable_api_sending=False,
        # The shared Redis has no maxmemory: the memory guard would (rightly) say so, once.
        max_redis_memory_fraction=0,
    )
    caplog.set_level(logging.WARNING)
    client: Client = await aiohttp_client(create_app(settings))
    await asyncio.sleep(1.6)  # idle readers: each read blocks, then comes back empty
    for cid in ("c1", "c2"):
        resp = await client.post("/api/update", json={"jobId": "short", "clientId": cid, "totalClients": 2})
        assert resp.status == 200
    status: dict[str, Any] = {}
    for _ in range(60):
        status = await (await client.get("/api/job-status/short")).json()
        deliveries = status.get("deliveries") or {}
        if status["status"] == "COMPLETED" and deliveries and deliveries["file"]["state"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "COMPLETED", status
    assert status["deliveries"]["file"]["state"] == "delivered", status
    problems = [r.getMessage() for r in caplog.records if r.name.startswith("orchestrator")]
    assert problems == []


def test_the_read_block_stays_inside_the_redis_timeout() -> None:
    assert read_block_ms(2.0) == 1000
    assert read_block_ms(10.0) == 1000
    assert read_block_ms(1.0) == 500
    assert read_block_ms(0.5) == 250
    assert read_block_ms(0.001) == 10
