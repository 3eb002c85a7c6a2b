"""JobStore and its Lua scripts, against fakeredis and the real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from orchestrator.errors import JobNotFound
from orchestrator.keys import Keys
from orchestrator.metrics import Metrics
from orchestrator.models import JobStatus, UpdateOutcome, UpdateRequest
from orchestrator.settings import Settings
from orchestrator.store import JobStore, now_ms


@pytest.fixture
def store(redis_client: aioredis.Redis, prefix: str) -> JobStore:
    return JobStore(
        redis_client,
        Settings(key_prefix=prefix, job_ttl_seconds=3600, event_history=5, enable_filesystem_saving=False),
        metrics=Metrics(),
    )


def req(job: str, client: str, total: int = 2, schema: str | None = None) -> UpdateRequest:
    return UpdateRequest(job_id=job, client_id=client, total_clients=total, schema_json=schema)


async def test_update_outcomes_and_versions(store: JobStore) -> None:
    first = await store.record_update(req("j", "a"))
    assert (first.outcome, first.created, first.triggered, first.status, first.done_count, first.version) == (
        UpdateOutcome.RECORDED,
        True,
        False,
        JobStatus.IN_PROGRESS,
        1,
        2,
    )
    again = await store.record_update(req("j", "a"))
    assert (again.outcome, again.created, again.version, again.done_count) == (UpdateOutcome.DUPLICATE, False, 2, 1)
    conflict = await store.record_update(req("j", "b", total=3))
    assert (conflict.outcome, conflict.conflict_field, conflict.total_clients) == (
        UpdateOutcome.CONFLICT,
        "totalClients",
        2,
    )
    last = await store.record_update(req("j", "b"))
    assert (last.outcome, last.triggered, last.status, last.done_count, last.version) == (
        UpdateOutcome.RECORDED,
        True,
        JobStatus.AGGREGATING,
        2,
        4,
    )
    closed = await store.record_update(req("j", "c"))
    assert (closed.outcome, closed.status) == (UpdateOutcome.CLOSED, JobStatus.AGGREGATING)


async def test_events_are_stored_bounded_and_published(store: JobStore, redis_client: aioredis.Redis) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.keys.events_channel)
    await pubsub.get_message(timeout=1)
    for client in ("a", "b", "c", "d"):
        await store.record_update(req("ev", client, total=4))
    history = await store.event_history("ev")
    # 6 events (created, 4 x client.done, aggregating) with a history of 5: the oldest is dropped.
    assert [e["version"] for e in history] == [2, 3, 4, 5, 6]
    assert [e["type"] for e in history] == ["client.done"] * 4 + ["job.aggregating"]
    assert history[0] == {
        "type": "client.done",
        "jobId": "ev",
        "version": 2,
        "at": history[0]["at"],
        "clientId": "a",
        "doneCount": 1,
        "totalClients": 4,
    }
    published: list[dict[str, Any]] = []
    while len(published) < 6:
        message = await pubsub.get_message(timeout=2)
        assert message is not None, published
        if message["type"] == "message":
            published.append(json.loads(message["data"]))
    assert [e["version"] for e in published] == [1, 2, 3, 4, 5, 6]
    assert published[0]["type"] == "job.created"
    assert published[1:] == history
    await pubsub.aclose()


async def test_trigger_queues_exactly_one_handoff(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.record_update(req("q", "a"))
    await store.record_update(req("q", "b"))
    await store.record_update(req("q", "b"))
    entries = await redis_client.xrange(store.keys.aggregation_queue)
    assert entries is not None
    assert [fields for _, fields in entries] == [{"jobId": "q", "version": "4"}]


async def test_script_replayed_after_success_changes_nothing(store: JobStore, redis_client: aioredis.Redis) -> None:
    """What a retried EVALSHA does: the second run of the very same call finds the change made."""
    await store.record_update(req("r", "a"))
    before = await redis_client.hgetall(store.keys.job("r"))
    replay = await store.record_update(req("r", "a"))
    assert replay.outcome is UpdateOutcome.DUPLICATE
    assert await redis_client.hgetall(store.keys.job("r")) == before
    await store.record_update(req("r", "b"))
    await store.record_update(req("r", "b"))
    assert await redis_client.xlen(store.keys.aggregation_queue) == 1


async def test_keys_are_hash_tagged_and_carry_a_ttl(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.record_update(req("ttl", "a"))
    keys = list(store.keys.job_keys("ttl").values())
    assert keys[0].endswith("job:{ttl}") and keys[1].endswith("job:{ttl}:updatedClients")
    for key in keys:
        assert await redis_client.exists(key)
        ttl = await redis_client.pttl(key)
        assert 3600_000 < ttl <= 3600_000 + 3600_000, key


async def test_get_job_reports_clients_in_order(store: JobStore) -> None:
    for client in ("z", "y", "x"):
        await store.record_update(req("o", client, total=3, schema='[{"dataType":"BOOLEAN","name":"b"}]'))
    job = await store.get_job("o")
    assert [c.client_id for c in job.clients] == ["z", "y", "x"]
    assert job.schema == [{"dataType": "BOOLEAN", "name": "b"}]
    assert job.status is JobStatus.AGGREGATING
    with pytest.raises(JobNotFound):
        await store.get_job("missing")


async def test_janitor_expires_stale_jobs_once(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.record_update(req("old", "a"))
    await store.record_update(req("new", "a"))
    later = now_ms() + 3600_000 + 1
    # Touch "new" so that only "old" is stale at `later`.
    await redis_client.zadd(store.keys.jobs_by_updated, {"new": later})
    await redis_client.hset(store.keys.job("new"), "updatedAt", later)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.keys.events_channel)
    await pubsub.get_message(timeout=1)
    results = await asyncio.gather(store.expire_stale(now=later), store.expire_stale(now=later))
    assert sorted((ids for ids, _ in results), key=len) == [[], ["old"]]
    assert not await redis_client.exists(*store.keys.job_keys("old").values())
    jobs, _ = await store.list_jobs(status=None, limit=10, cursor=None)
    assert [j.job_id for j in jobs] == ["new"]
    assert await store.count_by_status() == {s: (1 if s is JobStatus.IN_PROGRESS else 0) for s in JobStatus}
    message = await pubsub.get_message(timeout=2)
    assert message is not None
    event = json.loads(message["data"])
    assert (event["type"], event["jobId"], event["version"], event["status"]) == (
        "job.expired",
        "old",
        3,
        "IN_PROGRESS",
    )
    await pubsub.aclose()


async def test_listing_skips_jobs_whose_keys_vanished(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.record_update(req("gone", "a"))
    await store.record_update(req("kept", "a"))
    await redis_client.delete(store.keys.job("gone"))
    jobs, cursor = await store.list_jobs(status=None, limit=10, cursor=None)
    assert [j.job_id for j in jobs] == ["kept"]
    assert cursor is None


async def test_finish_once_with_exact_result(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.record_update(req("f", "a", total=1))
    result = {"aggregatedResults": [{"featureName": "x", "mean": 0.1234567890123456789, "big": 12345678901234567}]}
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.keys.events_channel)
    await pubsub.get_message(timeout=1)
    outcomes = await asyncio.gather(*(store.finish_job("f", JobStatus.COMPLETED, result=result) for _ in range(5)))
    assert sorted(done for done, _ in outcomes) == [False] * 4 + [True]
    job = await store.get_job("f")
    assert (job.status, job.final_result, job.version) == (JobStatus.COMPLETED, result, 4)
    assert job.completed_at_ms is not None
    message = await pubsub.get_message(timeout=2)
    assert message is not None
    event = json.loads(message["data"])
    assert (event["type"], event["version"], event["finalResult"]) == ("job.completed", 4, result)
    assert await store.count_by_status() == {s: (1 if s is JobStatus.COMPLETED else 0) for s in JobStatus}
    # A finished job cannot fail afterwards, nor can an unknown one finish.
    assert await store.finish_job("f", JobStatus.FAILED, reason="late") == (False, 4)
    assert await store.finish_job("nope", JobStatus.COMPLETED) == (False, 0)
    await pubsub.aclose()


async def test_fail_with_reason(store: JobStore) -> None:
    await store.record_update(req("g", "a", total=1))
    assert await store.finish_job("g", JobStatus.FAILED, reason="coordinator said no") == (True, 4)
    job = await store.get_job("g")
    assert (job.status, job.failure_reason, job.final_result) == (JobStatus.FAILED, "coordinator said no", None)
    history = await store.event_history("g")
    assert history[-1]["type"] == "job.failed" and history[-1]["reason"] == "coordinator said no"


async def test_a_job_id_reused_after_expiry_carries_on_its_versions(store: JobStore) -> None:
    await store.record_update(req("again", "a"))
    later = now_ms() + 3600_000 + 1
    assert await store.expire_stale(now=later) == (["again"], False)  # job.expired is version 3
    reborn = await store.record_update(req("again", "b"))
    assert (reborn.created, reborn.version) == (True, 5)  # job.created 4, client.done 5
    history = await store.event_history("again")
    assert [(e["type"], e["version"]) for e in history] == [("job.created", 4), ("client.done", 5)]
    # A listener that saw the old job up to version 3 is told of exactly what it missed.
    assert [v for v, _ in await store.events_since("again", 3) or []] == [4, 5]
    assert await store.events_since("again", 1) is None  # the old job's events are gone: snapshot


async def test_schemas_are_compared_by_digest_and_old_jobs_by_text(
    store: JobStore, redis_client: aioredis.Redis, prefix: str
) -> None:
    schema, other = '[{"dataType":"BOOLEAN","name":"a"}]', '[{"dataType":"BOOLEAN","name":"b"}]'
    await store.record_update(req("d", "a", total=4, schema=schema))
    assert (await store.record_update(req("d", "b", total=4, schema=schema))).outcome is UpdateOutcome.RECORDED
    assert (await store.record_update(req("d", "c", total=4, schema=other))).conflict_field == "schema"
    # A job stored before schema digests existed: its schema is compared as text.
    await redis_client.hdel(Keys(prefix).job("d"), "schemaDigest")
    assert (await store.record_update(req("d", "c", total=4, schema=other))).conflict_field == "schema"
    assert (await store.record_update(req("d", "c", total=4, schema=schema))).outcome is UpdateOutcome.RECORDED
    # A job created without a schema takes the first one given, digest and all.
    await store.record_update(req("n", "a", total=3))
    assert (await store.record_update(req("n", "b", total=3, schema=schema))).outcome is UpdateOutcome.RECORDED
    assert (await store.record_update(req("n", "c", total=3, schema=other))).conflict_field == "schema"
    assert (await store.get_job("n")).schema == json.loads(schema)
