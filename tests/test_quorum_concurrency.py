"""k of n, hammered on two service processes sharing one real Redis: a quorum closes collection exactly once
(at the deadline, by an admin, racing late updates), and the dropout-tolerant secure sum gives the plaintext
statistics of exactly its contributors whatever round its clients drop out at."""

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

from orchestrator.client import OrchestratorClient, OrchestratorError
from orchestrator.keys import Keys
from orchestrator.securesum.demo import SCHEMA, compare, plaintext_truth, synthetic_rows
from orchestrator.securesum.participant import STOP_POINTS, submit_statistics
from tests.conftest import REAL_REDIS_URL
from tests.support import ServiceProcess, service_instances

pytestmark = pytest.mark.real_redis

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture
async def instances(prefix: str, tmp_path: Path, real_redis: aioredis.Redis) -> AsyncIterator[list[ServiceProcess]]:
    env = {
        "REDIS_URL": REAL_REDIS_URL,
        "KEY_PREFIX": prefix,
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "WARNING",
        "AGGREGATION_WORKERS": "2",
        "AGGREGATION_SWEEP_SECONDS": "0.2",
    }
    async with service_instances(env, tmp_path) as processes:
        yield processes


async def events_of(redis: aioredis.Redis, prefix: str, job: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in await redis.lrange(Keys(prefix).events(job), 0, -1)]


async def final_status(session: aiohttp.ClientSession, base: str, job: str, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            async with session.get(f"{base}/api/job-status/{job}") as resp:
                body: dict[str, Any] = await resp.json()
            if body.get("status") in FINAL:
                return body
            await asyncio.sleep(0.1)


async def test_quorums_close_at_the_deadline_exactly_once(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str
) -> None:
    """Twenty jobs of 5 clients needing 3: each client reports three times on both instances; the jobs with 3
    or 4 reporters complete over exactly those at their deadline, the ones with 2 fail naming who reported."""
    rng = random.Random(11)
    reporters = {f"q{j:02d}": [f"c{i}" for i in range(2 + j % 3)] for j in range(20)}
    sends = [(job, c, instances[n % 2].base) for job, cs in reporters.items() for c in cs for n in range(3)]
    rng.shuffle(sends)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def send(job: str, client: str, base: str) -> int:
            body = {"jobId": job, "clientId": client, "totalClients": 5, "minClients": 3, "deadline": 2}
            async with session.post(f"{base}/api/update", json=body) as resp:
                return resp.status

        assert set(await asyncio.gather(*(send(*s) for s in sends))) == {200}
        finals = {job: await final_status(session, instances[1].base, job) for job in reporters}
    for job, clients in reporters.items():
        final = finals[job]
        events = [e["type"] for e in await events_of(real_redis, prefix, job)]
        if len(clients) >= 3:
            assert final["status"] == "COMPLETED", final
            assert (final["contributors"], final["missingCount"]) == (clients, 5 - len(clients))
            assert events.count("job.aggregating") == events.count("job.completed") == 1
            assert events.count("job.quorum_reached") == 1
        else:
            assert final["status"] == "FAILED"
            assert "2 of 5 clients reported (c0, c1); 3 never did; at least 3 needed" in final["failureReason"]
            assert events.count("job.failed") == 1 and "job.aggregating" not in events


async def test_an_admin_close_racing_late_updates_counts_each_answered_update(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str
) -> None:
    """Closes sent to both instances while the last clients report: one close wins, every update answered
    200 is a contributor, every one refused came after the close, and the job aggregates once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        base = [p.base for p in instances]
        for i in range(3):
            body = {"jobId": "race", "clientId": f"c{i}", "totalClients": 40, "minClients": 3}
            assert (await session.post(f"{base[i % 2]}/api/update", json=body)).status == 200

        async def update(i: int) -> tuple[str, int]:
            body = {"jobId": "race", "clientId": f"c{i}", "totalClients": 40, "minClients": 3}
            async with session.post(f"{base[i % 2]}/api/update", json=body) as resp:
                return f"c{i}", resp.status

        async def close(n: int) -> int:
            await asyncio.sleep(0.002 * n)
            async with session.post(f"{base[n % 2]}/api/jobs/race/close") as resp:
                return resp.status

        updates, closes = await asyncio.gather(
            asyncio.gather(*(update(i) for i in range(3, 40))), asyncio.gather(*(close(n) for n in range(6)))
        )
        final = await final_status(session, base[0], "race")
    assert sorted(closes).count(200) == 1 and set(closes) <= {200, 409}
    answered = {c for c, code in updates if code == 200}
    assert {code for _, code in updates} <= {200, 409}
    assert final["status"] == "COMPLETED"
    assert set(final["contributors"]) == answered | {"c0", "c1", "c2"}
    events = [e["type"] for e in await events_of(real_redis, prefix, "race")]
    assert events.count("job.aggregating") == events.count("job.completed") == 1


async def play(
    base: str, job: str, client_id: str, total: int, k: int, rows: list[dict[str, Any]], stop: str | None
) -> Any:
    async with OrchestratorClient(base) as client:
        try:
            return await submit_statistics(
                client, job, client_id, total, SCHEMA, rows, min_clients=k, round_timeout=3, stop_after=stop, timeout=60
            )
        except OrchestratorError as e:
            return e


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_dropouts_at_every_round_give_the_contributors_statistics(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str, seed: int
) -> None:
    """Seven holders on both instances, threshold 4, each dropping out at a random round (never registering,
    after keys, after shares, after its input) or not at all: the job completes over exactly the holders whose
    input was counted, with their plaintext statistics; or, with fewer than 4 in some round, fails naming it."""
    rng = random.Random(seed)
    holders = {f"h{i}": synthetic_rows(random.Random(rng.random()), 40) for i in range(7)}
    plan: dict[str, str | None] = {h: rng.choice([None, None, "never", *STOP_POINTS]) for h in holders}
    job = f"drop-{seed}"
    taking_part = [h for h in holders if plan[h] != "never"]
    await asyncio.gather(
        *(play(instances[n % 2].base, job, h, len(holders), 4, holders[h], plan[h]) for n, h in enumerate(taking_part))
    )
    async with aiohttp.ClientSession() as session:
        final = await final_status(session, instances[0].base, job)
    # Who is left after each round, by the plan.
    keyed = [h for h in taking_part]
    shared = [h for h in keyed if plan[h] != "keys"]
    sent = [h for h in shared if plan[h] != "shares"]
    rounds = [("keys", keyed), ("shares", shared), ("inputs", sent)]
    short = next((name for name, left in rounds if len(left) < 4), None)
    if short is not None:
        assert final["status"] == "FAILED", (plan, final)
        assert f"the {short} round closed" in final["failureReason"], (plan, final)
        return
    assert final["status"] == "COMPLETED", (plan, final)
    assert final["contributors"] == sorted(sent), plan
    lines, ok = compare(final["aggregatedResults"], plaintext_truth([r for h in sent for r in holders[h]]))
    assert ok, "\n".join(lines)
    events = await events_of(real_redis, prefix, job)
    dropped = sorted(e["clientId"] for e in events if e["type"] == "client.dropped")
    assert dropped == sorted(h for h in keyed if plan[h] in ("keys", "shares"))
    assert [e["type"] for e in events].count("job.completed") == 1
