"""A data holder that crashes in the middle of a secure sum (fakeredis and the real Redis): with its key file
it resumes the round it stopped in and its input counts, the sums equal to the plaintext statistics; with
its key file lost it cannot rejoin, and counts as dropped, never as a wrong input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from orchestrator.client import OrchestratorClient, OrchestratorError
from orchestrator.keys import Keys
from orchestrator.securesum.keyfile import KeyFile
from orchestrator.securesum.participant import submit_statistics

SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]
ROWS: dict[str, list[dict[str, Any]]] = {
    "a": [{"age": 30, "smoker": True, "blood": "A"}, {"age": 50, "smoker": False, "blood": "O"}],
    "b": [{"age": 40, "smoker": False, "blood": "B"}],
    "c": [{"age": 20, "smoker": True, "blood": "O"}, {"age": 70, "blood": "A"}],
    "d": [{"age": 90.5, "smoker": True, "blood": "B"}, {"age": 11, "smoker": True}],
}
# 3 of 4: d may drop out. No round waits long for a client that will not come back.
K = 3
ROUND_TIMEOUT = 2.0


def assert_plaintext(final: dict[str, Any], contributors: list[str]) -> None:
    """The job completed over exactly ``contributors``, with the statistics of exactly their rows."""
    assert final["status"] == "COMPLETED", final
    assert final["contributors"] == contributors
    rows = [row for c in contributors for row in ROWS[c]]
    age, smoker, blood = final["aggregatedResults"]
    ages = [r["age"] for r in rows]
    assert (age["count"], age["sum"]) == (len(ages), pytest.approx(sum(ages)))
    smokers = [r["smoker"] for r in rows if "smoker" in r]
    assert (smoker["aggregatedNotNull"], smoker["aggregatedTrue"]) == (len(smokers), sum(smokers))
    assert blood["categoryCounts"] == {c: sum(r.get("blood") == c for r in rows) for c in ("A", "B", "O")}


async def service(make_client: Callable[..., Any]) -> str:
    # Rounds close at their deadline on the sweep: sweep often, so a dropped client costs ~ROUND_TIMEOUT.
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.1)
    return str(client.make_url("")).rstrip("/")


async def take_part(
    orchestrator: OrchestratorClient, job: str, client_id: str, *, key_file: KeyFile | None = None, **options: Any
) -> dict[str, Any]:
    return await submit_statistics(
        orchestrator,
        job,
        client_id,
        len(ROWS),
        SCHEMA,
        ROWS[client_id],
        min_clients=K,
        round_timeout=ROUND_TIMEOUT,
        key_file=key_file,
        timeout=30,
        **options,
    )


async def events_of(redis: aioredis.Redis, prefix: str, job: str, client_id: str) -> list[str]:
    """The types of the job's events about ``client_id``."""
    events = [json.loads(e) for e in await redis.lrange(Keys(prefix).events(job), 0, -1)]
    return [e["type"] for e in events if e.get("clientId") == client_id]


def check_kept(path: Path, job: str, stop: str, instance: str) -> None:
    """What the key file holds after the round ``stop``: every step taken so far, nothing beyond."""
    kept = json.loads(path.read_text())
    assert (kept["jobId"], kept["instanceId"]) == (job, instance)
    assert len(kept["posted"]) == (0 if stop == "keys" else len(ROWS))
    assert len(kept["received"]) == (len(ROWS) if stop == "inputs" else 0)
    assert (kept["statistics"] is not None) == (stop == "inputs")
    assert kept["answered"] is None


@pytest.mark.parametrize("crashes", [("keys",), ("shares",), ("inputs",), ("keys", "shares", "inputs")])
async def test_a_client_resumes_from_its_key_file_after_a_crash(
    make_client: Callable[..., Any],
    tmp_path: Path,
    redis_client: aioredis.Redis,
    prefix: str,
    crashes: tuple[str, ...],
) -> None:
    url = await service(make_client)
    job, path = f"resume-{'-'.join(crashes)}", tmp_path / "d.key"
    async with OrchestratorClient(url) as orchestrator:

        async def crashing() -> dict[str, Any]:
            for stop in crashes:
                # Each run is a new process: it knows only what the key file kept.
                stopped = await take_part(orchestrator, job, "d", key_file=KeyFile.open(path, job), stop_after=stop)
                assert stopped["stoppedAfter"] == stop
                check_kept(path, job, stop, (await orchestrator.keys(job))["instanceId"])
                await asyncio.sleep(0.2)  # the restart
            return await take_part(orchestrator, job, "d", key_file=KeyFile.open(path, job))

        await asyncio.gather(crashing(), *(take_part(orchestrator, job, c) for c in "abc"))
        final = await orchestrator.wait_for_completion(job, timeout=30)
    assert_plaintext(final, ["a", "b", "c", "d"])
    assert (final["missingClients"], final["missingCount"]) == ([], 0)
    # The reruns repeated what was posted (the service took each post once) and went on from there.
    types = await events_of(redis_client, prefix, job, "d")
    assert [types.count(t) for t in ("shares.posted", "client.done", "unmask.posted")] == [1, 1, 1], types
    assert "client.dropped" not in types
    kept = json.loads(path.read_text())
    assert kept["answered"] == {"survivors": ["a", "b", "c", "d"], "dropped": []}


@pytest.mark.parametrize("lost_after", ["keys", "shares"])
async def test_a_client_that_lost_its_key_file_is_dropped_not_counted_wrong(
    make_client: Callable[..., Any],
    tmp_path: Path,
    redis_client: aioredis.Redis,
    prefix: str,
    lost_after: str,
) -> None:
    url = await service(make_client)
    job = f"lost-{lost_after}"
    async with OrchestratorClient(url) as orchestrator:

        async def losing() -> OrchestratorError:
            await take_part(
                orchestrator, job, "d", key_file=KeyFile.open(tmp_path / "d.key", job), stop_after=lost_after
            )
            await orchestrator.wait_for_round(job, "keys")
            # The rerun finds no key file: it makes new keys, which the closed keys round refuses.
            fresh = tmp_path / "d-new.key"
            with pytest.raises(OrchestratorError) as refused:
                await take_part(orchestrator, job, "d", key_file=KeyFile.open(fresh, job))
            assert json.loads(fresh.read_text())["instanceId"] is None  # never bound to the job
            return refused.value

        refusal, *_ = await asyncio.gather(losing(), *(take_part(orchestrator, job, c) for c in "abc"))
        final = await orchestrator.wait_for_completion(job, timeout=30)
        job_detail = await orchestrator.job(job)
    assert (refusal.status, refusal.code) == (409, "key_conflict"), refusal
    assert_plaintext(final, ["a", "b", "c"])
    assert (final["missingClients"], final["missingCount"]) == (["d"], 1)
    dropped_at = {"keys": "shares", "shares": "inputs"}[lost_after]
    assert job_detail["participation"]["dropped"] == [{"clientId": "d", "round": dropped_at}]
    types = await events_of(redis_client, prefix, job, "d")
    assert "client.done" not in types and types.count("keys.registered") == 1, types


async def test_a_client_that_lost_its_key_file_after_its_input_still_counts_right(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Its masked input is in; it cannot answer the unmask round, which the others complete: its input counts,
    with the mask the others' shares of its seed remove."""
    url = await service(make_client)
    job = "lost-inputs"
    async with OrchestratorClient(url) as orchestrator:

        async def losing() -> OrchestratorError:
            await take_part(orchestrator, job, "d", key_file=KeyFile.open(tmp_path / "d.key", job), stop_after="inputs")
            with pytest.raises(OrchestratorError) as refused:
                await take_part(orchestrator, job, "d", key_file=KeyFile.open(tmp_path / "d-new.key", job))
            return refused.value

        refusal, *_ = await asyncio.gather(losing(), *(take_part(orchestrator, job, c) for c in "abc"))
        final = await orchestrator.wait_for_completion(job, timeout=30)
    assert (refusal.status, refusal.code) == (409, "key_conflict"), refusal
    assert_plaintext(final, ["a", "b", "c", "d"])
