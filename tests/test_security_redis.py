"""Security against real servers: rate limits shared by two service processes on one real Redis, and
a Redis that requires a password."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.security.tokens import issue_token
from tests.conftest import REAL_REDIS_URL
from tests.support import RedisServerProcess, ServiceProcess, wait_until

pytestmark = pytest.mark.real_redis
SECRET = "s3cret-for-tests-only-0123456789abcdef"


async def test_rate_limits_are_shared_across_instances_and_recover(
    prefix: str, tmp_path: Path, real_redis: aioredis.Redis
) -> None:
    env = {
        "REDIS_URL": REAL_REDIS_URL,
        "KEY_PREFIX": prefix,
        "ACCESS_LOG": "false",
        "AUTH_JWT_SECRET": SECRET,
        "RATE_LIMIT_WINDOW": "3",
        "RATE_LIMIT_CLIENT_WRITES": "20",
        "RATE_LIMIT_IP_WRITES": "30",
    }
    instances = [ServiceProcess(env, tmp_path / f"i{n}") for n in range(2)]
    try:
        await asyncio.gather(*(i.ready("/readyz") for i in instances))
        client = {"Authorization": f"Bearer {issue_token(SECRET, 'c1', 'client', 600)}"}
        async with aiohttp.ClientSession() as session:

            async def send(n: int, headers: dict[str, str], client_id: str = "c1") -> tuple[int, str | None]:
                body = {"jobId": f"rl-{n}", "clientId": client_id, "totalClients": 2}
                async with session.post(f"{instances[n % 2].base}/api/update", json=body, headers=headers) as resp:
                    return resp.status, resp.headers.get("Retry-After")

            # Wait for the start of a window, so the whole burst falls into one.
            await asyncio.sleep(3 - time.time() % 3 + 0.05)
            burst = await asyncio.gather(*(send(n, client) for n in range(40)))
            statuses = [status for status, _ in burst]
            assert statuses.count(200) == 20 and statuses.count(429) == 20, statuses
            assert all(1 <= int(after or 0) <= 3 for status, after in burst if status == 429)
            # Another client from the same IP is still within the IP's limit...
            other = {"Authorization": f"Bearer {issue_token(SECRET, 'c2', 'client', 600)}"}
            more = await asyncio.gather(*(send(100 + n, other, "c2") for n in range(20)))
            # ...until the IP's 30 writes of this window are spent (c1's 20 accepted ones count; the ones its
            # own limit refused do not).
            assert [s for s, _ in more].count(200) == 10
            # The next window: writes go through again.
            await asyncio.sleep(3 - time.time() % 3 + 0.05)
            assert (await send(200, client))[0] == 200
        # Both instances counted into the same window, and audited every write, refused or not.
        audited = await real_redis.xlen(f"{prefix}audit")
        assert audited == 40 + 20 + 1
    finally:
        for instance in instances:
            instance.stop()


async def test_redis_with_a_password(tmp_path: Path) -> None:
    server = RedisServerProcess(tmp_path / "redis", "--requirepass", "p4ss-w0rd")
    server.start()
    try:
        base_env = {"REDIS_URL": server.url, "ACCESS_LOG": "false"}
        good = ServiceProcess({**base_env, "REDIS_PASSWORD": "p4ss-w0rd"}, tmp_path / "good")
        bad = ServiceProcess(base_env, tmp_path / "bad")
        try:
            await good.ready("/readyz")
            async with aiohttp.ClientSession() as session:
                body = {"jobId": "pw", "clientId": "a", "totalClients": 2}
                async with session.post(f"{good.base}/api/update", json=body) as resp:
                    assert resp.status == 200
                await wait_until(f"{bad.base}/readyz", status=503)
                async with session.get(f"{bad.base}/readyz") as resp:
                    assert "Authentication" in (await resp.json())["redis"]
                async with session.post(f"{bad.base}/api/update", json=body) as resp:
                    assert resp.status == 503
            assert "Redis refused this service's credentials" in bad.stderr()
            assert "p4ss-w0rd" not in good.stderr() + bad.stderr()
        finally:
            good.stop()
            bad.stop()
    finally:
        server.kill()
