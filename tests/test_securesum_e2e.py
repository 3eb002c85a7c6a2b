"""The secure sum end to end: data holders on two service processes sharing one real Redis, through HTTP
and WebSockets, every round of the protocol; racing key registrations; the result equals the plaintext
statistics."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.client import OrchestratorClient
from orchestrator.keys import Keys
from orchestrator.securesum.demo import SCHEMA, compare, plaintext_truth, synthetic_rows
from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes
from orchestrator.securesum.participant import submit_statistics
from tests.conftest import REAL_REDIS_URL
from tests.support import ServiceProcess, service_instances

pytestmark = pytest.mark.real_redis


@pytest.fixture
async def instances(prefix: str, tmp_path: Path, real_redis: aioredis.Redis) -> Any:
    env = {"REDIS_URL": REAL_REDIS_URL, "KEY_PREFIX": prefix, "ACCESS_LOG": "false", "AGGREGATION_WORKERS": "2"}
    async with service_instances(env, tmp_path) as processes:
        yield processes


async def job_events(redis: aioredis.Redis, prefix: str, job: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in await redis.lrange(Keys(prefix).events(job), 0, -1)]


async def test_clients_on_two_instances_get_the_plaintext_statistics(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str
) -> None:
    rng = random.Random(5)
    data = {f"holder-{i}": synthetic_rows(random.Random(rng.random()), 300) for i in range(6)}

    async def holder(n: int, client_id: str) -> dict[str, Any]:
        # Each holder talks to one instance: keys, events (WebSocket) and its update all go there.
        async with OrchestratorClient(instances[n % 2].base) as client:
            return await submit_statistics(
                client, "e2e", client_id, len(data), SCHEMA, data[client_id], wait=True, timeout=60
            )

    results = await asyncio.gather(*(holder(n, c) for n, c in enumerate(data)))
    assert {r["status"] for r in results} == {"COMPLETED"}
    lines, ok = compare(results[0]["aggregatedResults"], plaintext_truth([r for rows in data.values() for r in rows]))
    assert ok, "\n".join(lines)
    assert results[0]["metadata"]["aggregation"] == "secure-sum"

    assert (results[0]["contributors"], results[0]["missingClients"]) == (sorted(data), [])

    events = await job_events(real_redis, prefix, "e2e")
    types = [e["type"] for e in events]
    for kind in ("keys.registered", "shares.posted", "client.done", "unmask.posted"):
        assert types.count(kind) == 6, kind
    assert (types.count("keys.complete"), types.count("job.aggregating"), types.count("job.completed")) == (1, 1, 1)
    assert "client.dropped" not in types
    # Each round closes once every client answered it, in order, before the next round's answers come.
    closed = [(i, e) for i, e in enumerate(events) if e["type"] == "round.closed"]
    assert [(e["round"], e["next"], e["participants"]) for _, e in closed] == [
        ("keys", "shares", 6),
        ("shares", "inputs", 6),
        ("inputs", "unmask", 6),
        ("unmask", "done", 6),
    ]
    answers = ("keys.registered", "shares.posted", "client.done", "unmask.posted")
    for (at, _), answer, following in zip(closed, answers, (*answers[1:], "job.aggregating"), strict=True):
        last = max(i for i, t in enumerate(types) if t == answer)
        first_next = min(i for i, t in enumerate(types) if t == following)
        assert last < at < first_next, (answer, following)
    assert types.index("keys.complete") == closed[0][0] + 1
    assert types.index("job.aggregating") < types.index("job.completed")
    versions = [e["version"] for e in events]
    assert versions == sorted(set(versions))
    # Once the job is finished, nothing of the protocol remains (vectors, shares, unmask answers): the result does.
    assert await real_redis.exists(*Keys(prefix).protocol_keys("e2e")) == 0


async def test_racing_key_registrations_fill_the_round_exactly_once(
    instances: list[ServiceProcess], real_redis: aioredis.Redis, prefix: str
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        keys = [[encode_key(public_key_bytes(generate_private_key())) for _ in range(2)] for _ in range(15)]

        async def register(n: int) -> tuple[int, str]:
            mask, encryption = keys[n]
            body = {
                "clientId": f"c{n:02d}",
                "totalClients": 10,
                "publicKey": mask,
                "encryptionKey": encryption,
                "schema": SCHEMA,
                "minClients": 6,
            }
            async with session.post(f"{instances[n % 2].base}/api/jobs/race/keys", json=body) as resp:
                answer = await resp.json()
                return resp.status, answer.get("error", {}).get("code", "")

        # 15 clients race for a round of 10, each sending its key three times.
        outcomes = await asyncio.gather(*(register(n) for n in range(15) for _ in range(3)))
        async with session.get(f"{instances[0].base}/api/jobs/race/keys") as resp:
            round_ = await resp.json()
    assert (round_["keyCount"], round_["complete"], round_["round"], round_["threshold"]) == (10, True, "shares", 6)
    registered = {k["clientId"] for k in round_["keys"]}
    assert round_["participants"] == sorted(registered)
    # Each of 10 clients registered once (201) and its repeats changed nothing (200); 5 found the round full.
    assert sum(1 for status, _ in outcomes if status == 201) == 10
    assert sum(1 for status, _ in outcomes if status == 200) == 20
    assert [code for status, code in outcomes if status == 409] == ["keys_complete"] * 15
    assert len(registered) == 10
    assert all([k["publicKey"], k["encryptionKey"]] == keys[int(k["clientId"][1:])] for k in round_["keys"])
    events = await job_events(real_redis, prefix, "race")
    types = [e["type"] for e in events]
    counts = [types.count(t) for t in ("job.created", "keys.registered", "round.closed", "keys.complete")]
    assert counts == [1, 10, 1, 1]
    # The tenth key closed the round at once, and nothing was registered after it.
    assert types[-2:] == ["round.closed", "keys.complete"]
    assert (events[-2]["round"], events[-2]["next"], events[-2]["participants"]) == ("keys", "shares", 10)
