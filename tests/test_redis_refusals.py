"""Redis answering but refusing writes (out of memory, a read-only replica, a failed snapshot, too few
replicas), on private redis-servers: 503 with Retry-After for what needs a write, every read still answered,
nothing half-written, and one log line per episode, not one per request."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from redis.exceptions import ResponseError

from orchestrator.app import create_app
from orchestrator.metrics import Metrics
from orchestrator.settings import Settings
from orchestrator.store import JobStore
from tests.support import RedisServerProcess, fill_to_maxmemory
from tests.test_securesum_api import key_body
from tests.test_ws import receive

pytestmark = pytest.mark.real_redis

Client = TestClient[Any, Any]
REFUSES = "Redis refuses commands"
ACCEPTS = "Redis accepts"


def app_settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        redis_url=url,
        redis_timeout=1.0,
        retry_after_seconds=2,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=0,
        delivery_workers=0,
        janitor_interval_seconds=3600,
        **overrides,
    )


async def start(aiohttp_client: Callable[..., Any], url: str, tmp_path: Path, **overrides: Any) -> Client:
    return await aiohttp_client(create_app(app_settings(url, tmp_path, **overrides)))  # type: ignore[no-any-return]


async def update(client: Client, job: str, cid: str, total: int = 3) -> Any:
    return await client.post("/api/update", json={"jobId": job, "clientId": cid, "totalClients": total})


async def assert_refused(resp: Any, code: str) -> None:
    assert resp.status == 503, await resp.text()
    assert resp.headers["Retry-After"] == "2"
    error = (await resp.json())["error"]
    assert (error["code"], error["redisError"], error["retryAfter"]) == ("redis_refused", code, 2), error


async def assert_job_a_unchanged(client: Client) -> None:
    resp = await client.get("/api/job-status/a")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["status"], body["version"], body["jobInfo"]["updatedClients"]) == ("IN_PROGRESS", 2, ["c1"])


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(text)]


async def exercise(client: Client, code: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every endpoint against a Redis refusing writes with ``code``, job 'a' (c1 of 3) stored before."""
    caplog.clear()
    for _ in range(3):  # each write more than once: still one log line
        await assert_refused(await update(client, "b", "c1", total=2), code)
        await assert_refused(await update(client, "a", "c2"), code)
        await assert_refused(await client.post("/api/jobs/a/cancel", json={"reason": "no"}), code)
        await assert_refused(await client.post("/api/jobs/k/keys", json=key_body("c1")), code)
        # These would write nothing, but their rate limit must count them.
        await assert_refused(await client.post("/api/jobs/a/deliveries/retry"), code)
        await assert_refused(await client.post("/api/smpc/callback/a?token=t", json={"status": "COMPLETED"}), code)
    # Every read Redis serves is answered.
    await assert_job_a_unchanged(client)
    listing = await (await client.get("/api/jobs")).json()
    assert [job["jobId"] for job in listing["jobs"]] == ["a"]
    detail = await client.get("/api/jobs/a")
    assert detail.status == 200 and (await detail.json())["doneCount"] == 1
    assert (await client.get("/api/job-status/b")).status == 404
    assert (await client.get("/api/jobs/k")).status == 404
    for path in ("/healthz", "/metrics", "/api/openapi.json"):
        assert (await client.get(path)).status == 200, path
    async with client.ws_connect("/ws") as ws:
        assert [job["jobId"] for job in (await receive(ws))["jobs"]] == ["a"]
    async with client.ws_connect("/ws/jobs/a") as ws:
        assert (await receive(ws))["version"] == 2
    said = lines(caplog, REFUSES)
    assert len(said) == 1, said
    assert code in said[0]
    errors = [
        r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and not r.getMessage().startswith(REFUSES)
    ]
    assert not errors, [r.getMessage() for r in errors]
    assert not [r for r in caplog.records if "Audit entry not stored" in r.getMessage() and r.levelname != "DEBUG"]


async def recovers(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Once Redis takes writes again: the refused update goes through on a retry, and the log says so once."""
    await assert_job_a_unchanged(client)
    assert (await update(client, "a", "c2")).status == 200
    assert (await update(client, "a", "c2")).status == 200
    assert len(lines(caplog, ACCEPTS)) == 1, lines(caplog, ACCEPTS)
    body = await (await client.get("/api/job-status/a")).json()
    assert (body["progress"]["doneCount"], body["version"]) == (2, 3)


async def test_out_of_memory(
    aiohttp_client: Callable[..., Any],
    private_redis: RedisServerProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start(aiohttp_client, private_redis.url, tmp_path)
    assert (await update(client, "a", "c1")).status == 200
    await fill_to_maxmemory(private_redis.url)
    await exercise(client, "OOM", caplog)
    admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await admin.config_set("maxmemory", 0)
        await recovers(client, caplog)
        # A new episode is logged anew.
        await fill_to_maxmemory(private_redis.url)
        await assert_refused(await update(client, "a", "c3"), "OOM")
        assert len(lines(caplog, REFUSES)) == 2
    finally:
        await admin.aclose()


async def test_an_audit_entry_refused_leaves_the_answer_be(
    aiohttp_client: Callable[..., Any],
    private_redis: RedisServerProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No rate limits: these writes need no Redis write but their audit entry's.
    client = await start(
        aiohttp_client, private_redis.url, tmp_path, rate_limit_client_writes=0, rate_limit_ip_writes=0
    )
    assert (await update(client, "a", "c1")).status == 200
    await fill_to_maxmemory(private_redis.url)
    caplog.clear()
    for _ in range(3):
        assert (await client.post("/api/jobs/a/deliveries/retry")).status == 409
        assert (await client.post("/api/smpc/callback/a?token=t", json={"status": "COMPLETED"})).status == 409
        assert (await client.post("/api/jobs/a/cancel", json={"reason": 5})).status == 400
        assert (await client.post("/api/jobs/nope/deliveries/retry")).status == 404
        await assert_refused(await client.post("/api/jobs/a/cancel"), "OOM")
    assert len(lines(caplog, REFUSES)) == 1
    await assert_job_a_unchanged(client)


async def test_too_few_replicas(
    aiohttp_client: Callable[..., Any],
    private_redis: RedisServerProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start(aiohttp_client, private_redis.url, tmp_path)
    assert (await update(client, "a", "c1")).status == 200
    admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await admin.config_set("min-replicas-to-write", 1)
        await exercise(client, "NOREPLICAS", caplog)
        await admin.config_set("min-replicas-to-write", 0)
        await recovers(client, caplog)
    finally:
        await admin.aclose()


async def test_failed_snapshot(
    aiohttp_client: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServerProcess(tmp_path / "redis", "--appendonly", "no", "--enable-protected-configs", "yes")
    server.start()
    admin = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        client = await start(aiohttp_client, server.url, tmp_path)
        assert (await update(client, "a", "c1")).status == 200
        # A BGSAVE that cannot write its file (its directory is gone), with snapshots configured.
        gone = tmp_path / "gone"
        gone.mkdir()
        await admin.config_set("save", "3600 1")
        await admin.config_set("stop-writes-on-bgsave-error", "yes")
        await admin.config_set("dir", str(gone))
        os.rmdir(gone)
        await admin.bgsave()
        for _ in range(100):
            info = await admin.info("persistence")
            if not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == "err":
                break
            await asyncio.sleep(0.05)
        assert info["rdb_last_bgsave_status"] == "err"
        await exercise(client, "MISCONF", caplog)
        await admin.config_set("dir", str(tmp_path / "redis"))
        await admin.bgsave()
        for _ in range(100):
            info = await admin.info("persistence")
            if not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == "ok":
                break
            await asyncio.sleep(0.05)
        await recovers(client, caplog)
    finally:
        await admin.aclose()
        server.kill()


async def test_read_only_replica(
    aiohttp_client: Callable[..., Any],
    private_redis: RedisServerProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary = await start(aiohttp_client, private_redis.url, tmp_path / "primary")
    assert (await update(primary, "a", "c1")).status == 200
    replica_server = RedisServerProcess(tmp_path / "replica", "--replicaof", "127.0.0.1", str(private_redis.port))
    replica_server.start()
    try:
        replica = await start(aiohttp_client, replica_server.url, tmp_path / "replica")
        # The first sync takes a while on a busy machine: up to 20 s.
        for _ in range(400):
            if (await replica.get("/api/job-status/a")).status == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replica never synced job a")
        # The replica serves what it has and refuses the rest, which the primary never sees.
        await exercise(replica, "READONLY", caplog)
        await assert_job_a_unchanged(primary)
        assert (await primary.get("/api/job-status/b")).status == 404
    finally:
        replica_server.kill()


async def test_script_errors_that_are_not_refusals_stay_bugs(real_redis: aioredis.Redis, prefix: str) -> None:
    """A Lua script's own error (or a wrong type) is a bug: it must not be answered as a passing 503."""
    from orchestrator.refusals import refusal_code

    store = JobStore(
        real_redis,
        Settings(key_prefix=prefix, job_ttl_seconds=60, event_history=5, enable_filesystem_saving=False),
        metrics=Metrics(),
    )
    broken = real_redis.register_script("return redis.call('HSET', KEYS[1])")
    raised = real_redis.register_script("error('OOM, said the script')")
    for script in (broken, raised):
        with pytest.raises(ResponseError) as caught:
            async with store.guard("test"):
                await script(keys=[f"{prefix}x"], args=[])
        assert refusal_code(caught.value) is None
    await real_redis.set(f"{prefix}s", "v")
    with pytest.raises(ResponseError):
        async with store.guard("test"):
            await real_redis.hget(f"{prefix}s", "f")
    assert not store.refusals.active


async def test_busy_script_refuses_reads_too(
    aiohttp_client: Callable[..., Any],
    private_redis: RedisServerProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start(aiohttp_client, private_redis.url, tmp_path)
    assert (await update(client, "a", "c1")).status == 200
    admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    blocker = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await admin.config_set("busy-reply-threshold", 50)
        spin = "local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < 2 do end return 1"
        busy = asyncio.ensure_future(blocker.eval(spin, 0))
        await asyncio.sleep(0.3)
        caplog.clear()
        for _ in range(3):
            await assert_refused(await update(client, "a", "c2"), "BUSY")
            await assert_refused(await client.get("/api/job-status/a"), "BUSY")
        assert (await client.get("/healthz")).status == 200
        assert len(lines(caplog, REFUSES)) == 1
        assert await busy == 1
        await assert_job_a_unchanged(client)
        assert len(lines(caplog, ACCEPTS)) == 1
    finally:
        await blocker.aclose()
        await admin.aclose()


def test_an_episode_is_logged_when_it_starts_while_it_lasts_and_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.refusals import RefusalLog

    log = RefusalLog(relog_seconds=0.05)
    for _ in range(5):
        log.refused("update", "OOM", "OOM command not allowed")
    assert len(caplog.records) == 1
    log.accepted("get_job")  # a read working says nothing of the writes
    assert log.active and len(caplog.records) == 1
    time.sleep(0.06)
    log.refused("audit", "OOM", "OOM command not allowed")
    assert len(lines(caplog, "Redis still refuses commands (6 refused")) == 1
    log.refused("audit", "READONLY", "READONLY You can't write against a read only replica.")
    assert len(lines(caplog, REFUSES)) == 2  # another refusal: another episode
    log.accepted("audit")
    assert not log.active and len(lines(caplog, ACCEPTS)) == 1
    log.accepted("audit")
    assert len(caplog.records) == 4
