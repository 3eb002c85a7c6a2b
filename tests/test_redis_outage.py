"""Redis stopped or hung mid-test: quick 503s with Retry-After, then recovery with nothing acknowledged lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator.app import create_app
from orchestrator.settings import Settings
from tests.support import RedisServerProcess

pytestmark = pytest.mark.real_redis


@pytest.fixture
async def outage_client(
    aiohttp_client: Callable[..., Any], private_redis: RedisServerProcess, tmp_path: Path
) -> TestClient[Any, Any]:
    settings = Settings(
        redis_url=private_redis.url,
        redis_timeout=1.0,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        retry_after_seconds=2,
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def update(client: TestClient[Any, Any], job: str, cid: str) -> Any:
    return await client.post("/api/update", json={"jobId": job, "clientId": cid, "totalClients": 3})


async def assert_unavailable(client: TestClient[Any, Any], job: str, cid: str) -> None:
    started = time.monotonic()
    resp = await update(client, job, cid)
    elapsed = time.monotonic() - started
    assert resp.status == 503, await resp.text()
    assert resp.headers["Retry-After"] == "2"
    assert (await resp.json())["error"]["code"] == "redis_unavailable"
    assert elapsed < 3.0, elapsed
    status = await client.get(f"/api/job-status/{job}")
    assert status.status == 503
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_redis_killed_and_restarted(
    outage_client: TestClient[Any, Any], private_redis: RedisServerProcess
) -> None:
    client = outage_client
    acknowledged = []
    for n in range(10):
        resp = await update(client, f"job{n}", "c1")
        assert resp.status == 200
        acknowledged.append((f"job{n}", "c1"))

    private_redis.kill()
    await assert_unavailable(client, "job0", "c2")

    private_redis.start()
    # The update refused during the outage is simply retried; every acknowledged one is still there.
    resp = await update(client, "job0", "c2")
    assert resp.status == 200
    resp = await update(client, "job0", "c2")
    assert (await resp.json())["alreadyRecorded"] is True
    acknowledged.append(("job0", "c2"))
    for job, cid in acknowledged:
        body = await (await client.get(f"/api/job-status/{job}")).json()
        assert cid in body["jobInfo"]["updatedClients"]
    body = await (await client.get("/api/job-status/job0")).json()
    assert body["progress"]["doneCount"] == 2
    assert (await client.get("/readyz")).status == 200


async def test_hung_redis_answers_503_within_the_timeout(
    outage_client: TestClient[Any, Any], private_redis: RedisServerProcess
) -> None:
    client = outage_client
    assert (await update(client, "hung", "c1")).status == 200
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        await assert_unavailable(client, "hung", "c2")
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    resp = await update(client, "hung", "c2")
    assert resp.status == 200
    body = await (await client.get("/api/job-status/hung")).json()
    assert body["progress"]["doneCount"] == 2
