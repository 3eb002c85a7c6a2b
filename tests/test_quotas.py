"""Quotas, on fakeredis and the real Redis: jobs created per client and per IP per window, bytes per job, and
new jobs refused while Redis is nearly full; a refused request creates nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes
from orchestrator.security.tokens import issue_token
from orchestrator.settings import Settings, SettingsError
from orchestrator.typedefs import MEMORY, STORE
from tests.support import new_keys

Client = TestClient[Any, Any]
SCHEMA = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
]


def encryption() -> dict[str, str]:
    return {"encryptionKey": new_keys()["encryptionKey"]}


def update(job: str, client: str, total: int = 2, **extra: Any) -> dict[str, Any]:
    return {"jobId": job, "clientId": client, "totalClients": total, **extra}


def key_body(client_id: str, total: int = 2) -> dict[str, Any]:
    key = encode_key(public_key_bytes(generate_private_key()))
    return {"clientId": client_id, "totalClients": total, "publicKey": key, **encryption(), "schema": SCHEMA}


def big_schema(size: int) -> list[dict[str, Any]]:
    """A short-form schema of about ``size`` bytes (long feature names)."""
    return [{"name": f"f{i:05d}" + "x" * 240, "dataType": "NUMERIC"} for i in range(size // 270 + 1)]


async def error_of(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


async def test_a_client_past_its_job_quota_creates_nothing_and_others_go_on(make_client: Callable[..., Any]) -> None:
    client = await make_client(rate_limit_client_jobs=3)
    for n in range(3):
        assert (await client.post("/api/update", json=update(f"q{n}", "greedy"))).status == 200
    refused = await client.post("/api/update", json=update("q3", "greedy"))
    assert await error_of(refused) == (429, "job_quota_exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert (await client.get("/api/jobs/q3")).status == 404
    assert await client.app[STORE].find_job("q3") is None
    # Updates of jobs that exist are no creations: they go on, the quota's own client's included.
    assert (await client.post("/api/update", json=update("q0", "greedy"))).status == 200
    assert (await client.post("/api/update", json=update("q1", "other"))).status == 200
    # Another client has a quota of its own.
    assert (await client.post("/api/update", json=update("q4", "other"))).status == 200
    # The refused request is in the audit trail with its outcome.
    entries = [e for e in (await (await client.get("/api/audit?limit=50")).json())["entries"] if e["job"] == "q3"]
    assert [e["outcome"] for e in entries] == ["quota_exceeded"]


async def test_with_authentication_the_quota_is_the_tokens(make_client: Callable[..., Any]) -> None:
    # One token is one quota, whatever clientIds it names.
    secret = "s3cret-for-tests-only-0123456789abcdef"
    client = await make_client(auth_jwt_secret=secret, rate_limit_client_jobs=2, rate_limit_ip_jobs=0)
    ops = {"Authorization": f"Bearer {issue_token(secret, 'ops', 'admin', 600, None)}"}
    holder = {"Authorization": f"Bearer {issue_token(secret, 'holder', 'client', 600, ['*'])}"}
    for n in range(2):
        assert (await client.post("/api/update", json=update(f"t{n}", f"c{n}"), headers=ops)).status == 200
    resp = await client.post("/api/update", json=update("t2", "c2"), headers=ops)
    assert await error_of(resp) == (429, "job_quota_exceeded")
    assert (await client.post("/api/update", json=update("t3", "holder"), headers=holder)).status == 200


async def test_the_job_quota_is_exact_across_replicas(make_client: Callable[..., Any]) -> None:
    # Two replicas on one Redis, twenty creations at once: the quota's count is the scripts', shared.
    replicas = [await make_client(rate_limit_client_jobs=5) for _ in range(2)]
    responses = await asyncio.gather(
        *(replicas[n % 2].post("/api/update", json=update(f"r{n}", "greedy")) for n in range(20))
    )
    statuses = sorted(resp.status for resp in responses)
    assert statuses == [200] * 5 + [429] * 15
    jobs, _ = await replicas[0].app[STORE].list_jobs(status=None, limit=100, cursor=None)
    assert len(jobs) == 5


async def test_the_ip_job_quota_holds_whatever_the_client_ids(make_client: Callable[..., Any]) -> None:
    # Without authentication the clientId is the caller's word: the IP's quota still holds.
    client = await make_client(rate_limit_client_jobs=100, rate_limit_ip_jobs=4)
    for n in range(4):
        assert (await client.post("/api/update", json=update(f"i{n}", f"c{n}"))).status == 200
    assert await error_of(await client.post("/api/update", json=update("i4", "c4"))) == (429, "job_quota_exceeded")
    assert await client.app[STORE].find_job("i4") is None


async def test_the_key_round_counts_against_the_job_quota(make_client: Callable[..., Any]) -> None:
    client = await make_client(rate_limit_client_jobs=2)
    for n in range(2):
        assert (await client.post(f"/api/jobs/k{n}/keys", json=key_body("holder"))).status == 201
    resp = await client.post("/api/jobs/k2/keys", json=key_body("holder"))
    assert await error_of(resp) == (429, "job_quota_exceeded")
    assert "Retry-After" in resp.headers
    assert (await client.get("/api/jobs/k2")).status == 404
    # The quota is one for both ways of creating a job; keys of an existing job still register.
    assert await error_of(await client.post("/api/update", json=update("k3", "holder"))) == (429, "job_quota_exceeded")
    assert (await client.post("/api/jobs/k0/keys", json=key_body("partner"))).status == 201


async def test_a_schema_over_the_job_budget_is_refused_and_nothing_stored(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_job_bytes=20_000)
    schema = big_schema(30_000)
    resp = await client.post("/api/update", json=update("b1", "a", schema=schema))
    status, code = await error_of(resp)
    assert (status, code) == (400, "job_too_large")
    assert "MAX_JOB_BYTES=20000" in (await resp.json())["error"]["message"]
    assert await client.app[STORE].find_job("b1") is None
    # Many clients count too: their bookkeeping is part of the job.
    assert await error_of(await client.post("/api/update", json=update("b2", "a", total=100))) == (
        400,
        "job_too_large",
    )
    # A job created without a schema cannot be given one over the budget later either.
    assert (await client.post("/api/update", json=update("b3", "a"))).status == 200
    later = await client.post("/api/update", json=update("b3", "b", schema=schema))
    assert await error_of(later) == (400, "job_too_large")
    job = await client.app[STORE].get_job("b3")
    assert (job.schema, job.done_count) == (None, 1)
    # Within the budget, all is as before.
    assert (await client.post("/api/update", json=update("b3", "b", schema=SCHEMA))).status == 200


async def test_a_secure_sum_job_over_the_budget_is_refused(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_job_bytes=2048)
    resp = await client.post("/api/jobs/v1/keys", json=key_body("a", total=5))
    assert await error_of(resp) == (400, "job_too_large")
    assert (await client.get("/api/jobs/v1")).status == 404


async def test_new_jobs_get_507_while_redis_is_nearly_full(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_redis_memory_fraction=0.9)
    assert (await client.post("/api/update", json=update("m1", "a"))).status == 200
    assert (await client.post("/api/jobs/m2/keys", json=key_body("a"))).status == 201
    # A limit of 1 KiB (this Redis has no maxmemory): the real Redis (sampled every second) uses more, and
    # fakeredis (which cannot report its memory) is told so.
    memory = client.app[MEMORY]
    memory.fallback_limit = 1024
    memory.observe(10**6, 0)
    assert memory.full
    for refused in (
        await client.post("/api/update", json=update("m3", "a")),
        await client.post("/api/jobs/m4/keys", json=key_body("a")),
    ):
        assert await error_of(refused) == (507, "storage_full")
        assert int(refused.headers["Retry-After"]) >= 1
    for job in ("m3", "m4"):
        assert await client.app[STORE].find_job(job) is None
    # What exists goes on: updates, keys, reads, cancels.
    assert (await client.post("/api/update", json=update("m1", "b"))).status == 200
    assert (await client.post("/api/jobs/m2/keys", json=key_body("b"))).status == 201
    assert (await client.get("/api/jobs/m1")).status == 200
    assert (await client.get("/api/job-status/m1")).status == 200
    assert (await client.get("/api/jobs")).status == 200
    assert (await client.post("/api/jobs/m2/cancel")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'orchestrator_redis_memory_bytes{kind="threshold"} 921.0' in metrics
    # Below the threshold again, jobs are created again.
    memory.fallback_limit = 0
    memory.observe(0, 0)
    assert (await client.post("/api/update", json=update("m3", "a"))).status == 200


def test_quota_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.rate_limit_client_jobs, defaults.rate_limit_ip_jobs) == (1000, 10000)
    assert (defaults.max_redis_memory_fraction, defaults.max_redis_memory_bytes) == (0.9, 0)
    # MAX_JOB_VECTOR_BYTES, the budget's former name, is still read; MAX_JOB_BYTES wins.
    assert Settings.from_env({"MAX_JOB_VECTOR_BYTES": "5000"}).max_job_bytes == 5000
    assert Settings.from_env({"MAX_JOB_VECTOR_BYTES": "5000", "MAX_JOB_BYTES": "6000"}).max_job_bytes == 6000
    env = {"RATE_LIMIT_CLIENT_JOBS": "7", "JOB_CREATION_WINDOW": "60", "MAX_REDIS_MEMORY_FRACTION": "0"}
    settings = Settings.from_env(env)
    assert (settings.rate_limit_client_jobs, settings.job_creation_window_seconds) == (7, 60)
    assert settings.max_redis_memory_fraction == 0
    for name, value in [("MAX_REDIS_MEMORY_FRACTION", "1.5"), ("RATE_LIMIT_IP_JOBS", "-1"), ("MAX_JOB_BYTES", "10")]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
