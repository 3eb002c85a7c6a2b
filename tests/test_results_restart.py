"""A delivery pending when its process is killed is delivered by the next one (real Redis)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import REAL_REDIS_URL
from tests.fake_results_api import FakeResultsApi
from tests.support import ServiceProcess

pytestmark = pytest.mark.real_redis


async def test_killed_and_restarted_while_a_delivery_is_pending(
    aiohttp_server: Callable[..., Any], real_redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    api = FakeResultsApi(fail_first=10**6)
    server = await aiohttp_server(api.app())
    env = {
        "REDIS_URL": REAL_REDIS_URL,
        "KEY_PREFIX": prefix,
        "RESULTS_API_URL": str(server.make_url("/results")),
        "ENABLE_FILESYSTEM_SAVING": "false",
        "DELIVERY_BACKOFF": "0.05",
        "DELIVERY_MAX_BACKOFF": "0.2",
        "DELIVERY_ATTEMPTS": "1000",
        "DELIVERY_CLAIM_IDLE": "1",
    }
    first = ServiceProcess(env, tmp_path / "first")
    second = None
    try:
        await first.ready("/readyz")
        async with aiohttp.ClientSession() as session:
            for cid in ("a", "b"):
                body = {"jobId": "survivor", "clientId": cid, "totalClients": 2}
                async with session.post(f"{first.base}/api/update", json=body) as resp:
                    assert resp.status == 200
            for _ in range(200):
                if len(api.calls) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(api.calls) >= 2 and not api.accepted
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(5)
            await asyncio.sleep(0.5)  # a request the dead process had in flight is answered (503) first
            api.fail_first = len(api.calls)  # the API is back
            second = ServiceProcess(env, tmp_path / "second")
            await second.ready("/readyz")
            for _ in range(200):
                async with session.get(f"{second.base}/api/job-status/survivor") as resp:
                    status = await resp.json()
                if status.get("deliveries", {}).get("api", {}).get("state") == "delivered":
                    break
                await asyncio.sleep(0.05)
        assert status["deliveries"]["api"]["state"] == "delivered"
        assert len(api.accepted) == 1
        assert len({call["headers"]["Idempotency-Key"] for call in api.calls}) == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()
