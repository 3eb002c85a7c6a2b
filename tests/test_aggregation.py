"""Aggregation end to end, in process, against a fake SMPC coordinator on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator.typedefs import STORE
from tests.fake_coordinator import FakeCoordinator
from tests.support import DETAILED_SCHEMA, final_status, free_port

Client = TestClient[Any, Any]
OUTPUT = [1000, 54, 240, 135.6, 90, 135, 180, 1000, 750, 900]


async def report_all(client: Client, job: str, clients: int, **extra: Any) -> None:
    for i in range(clients):
        body = {"jobId": job, "clientId": f"c{i}", "totalClients": clients, "schema": DETAILED_SCHEMA, **extra}
        resp = await client.post("/api/update", json=body)
        assert resp.status == 200, await resp.text()


async def test_smpc_happy_path(agg_client: Callable[..., Any], coordinator: FakeCoordinator) -> None:
    client = await agg_client()
    coordinator.outputs["happy"] = OUTPUT
    await report_all(client, "happy", 3)
    status = await final_status(client, "happy")
    assert status["status"] == "COMPLETED", status
    assert status["message"] == "Job happy is completed."
    features = {f["featureName"]: f for f in status["aggregatedResults"]}
    assert features["isActive"]["percentage"] == 75.0
    assert features["age"]["sumOfAvg"] == 135.6
    assert status["metadata"]["totalFeatures"] == 3
    assert status["metadata"]["totalClients"] == 3
    assert status["metadata"]["aggregation"] == "smpc"
    assert coordinator.triggers["happy"] == 1
    assert coordinator.trigger_bodies["happy"] == [{"computationType": "sum", "clients": ["c0", "c1", "c2"]}]
    events = await client.app[STORE].event_history("happy")
    completed = [e for e in events if e["type"] == "job.completed"]
    assert len(completed) == 1
    assert completed[0]["finalResult"]["aggregatedResults"] == status["aggregatedResults"]


async def test_job_id_is_url_encoded(agg_client: Callable[..., Any], coordinator: FakeCoordinator) -> None:
    client = await agg_client()
    coordinator.outputs["a:b.c"] = OUTPUT
    await report_all(client, "a:b.c", 1)
    assert (await final_status(client, "a:b.c"))["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("triggers", "polls", "expected"),
    [
        ([(409, {"message": "already running"})], [], "COMPLETED"),
        ([(503, None), (500, {"message": "boom"}), (411, None)], [], "COMPLETED"),
        ([], [(204, None), (204, None), (200, {"status": "RUNNING"}), (500, None)], "COMPLETED"),
        ([(400, {"message": "invalid clients"})], [], "FAILED:coordinator refused the job (400): invalid clients"),
        ([(404, {"message": "client c2 not connected"})], [], "FAILED:(404): client c2 not connected"),
        ([], [(200, {"status": "FAILED", "message": "node crashed"})], "FAILED:computation FAILED: node crashed"),
        ([], [(200, {"status": "COMPLETED", "computationOutput": [1, 2]})], "FAILED:the aggregate has 2 values"),
        ([], [(200, {"status": "COMPLETED"})], "FAILED:without a computationOutput"),
        ([], [(200, {"status": "COMPLETED", "computationOutput": [*OUTPUT[:-1], 10**400]})], "FAILED:out of range"),
    ],
)
async def test_coordinator_answers(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator, triggers: list[Any], polls: list[Any], expected: str
) -> None:
    client = await agg_client()
    coordinator.outputs["j"] = OUTPUT
    coordinator.trigger_replies = list(triggers)
    if polls:
        coordinator.poll_replies["j"] = (
            [*polls, (200, {"status": "COMPLETED", "computationOutput": OUTPUT})]
            if expected == "COMPLETED"
            else list(polls)
        )
    await report_all(client, "j", 3)
    status = await final_status(client, "j")
    state, _, reason = expected.partition(":")
    assert status["status"] == state, status
    if reason:
        assert reason in status["failureReason"]
        events = [e for e in await client.app[STORE].event_history("j") if e["type"] == "job.failed"]
        assert len(events) == 1 and reason in events[0]["reason"]
    assert coordinator.triggers["j"] <= 1


async def test_a_coordinator_that_never_answers_fails_the_job_in_time(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    coordinator.hang = True
    client = await agg_client(aggregation_timeout_seconds=1.5, smpc_request_timeout_seconds=0.3)
    await report_all(client, "silent", 2)
    status = await final_status(client, "silent", within=6)
    assert status["status"] == "FAILED"
    assert status["failureReason"] == "aggregation did not finish within 1.5 s of the trigger"


async def test_none_backend_per_job(agg_client: Callable[..., Any], coordinator: FakeCoordinator) -> None:
    client = await agg_client()
    await report_all(client, "coord-only", 2, aggregation="none")
    status = await final_status(client, "coord-only")
    assert status["status"] == "COMPLETED"
    assert status["jobInfo"]["finalResult"]["clientList"] == ["c0", "c1"]
    assert status["metadata"]["aggregation"] == "none"
    assert coordinator.triggers == {}


async def test_collection_deadline_fails_with_the_missing_clients(agg_client: Callable[..., Any]) -> None:
    client = await agg_client()
    for cid in ("a", "b"):
        resp = await client.post(
            "/api/update", json={"jobId": "late", "clientId": cid, "totalClients": 4, "deadline": 0.5}
        )
        assert resp.status == 200
    status = await final_status(client, "late", within=5)
    assert status["status"] == "FAILED"
    assert status["failureReason"] == "Collection deadline passed: 2 of 4 clients reported (a, b); 2 never did"
    assert (await client.post("/api/update", json={"jobId": "late", "clientId": "c", "totalClients": 4})).status == 409


async def test_cancel_during_aggregation(agg_client: Callable[..., Any], coordinator: FakeCoordinator) -> None:
    coordinator.hold = asyncio.Event()
    coordinator.outputs["cx"] = OUTPUT
    client = await agg_client()
    await report_all(client, "cx", 2)
    await asyncio.wait_for(coordinator.triggered.wait(), 5)
    assert (await client.post("/api/jobs/cx/cancel", json={"reason": "stop"})).status == 200
    coordinator.hold.set()
    await asyncio.sleep(0.5)
    status = await (await client.get("/api/job-status/cx")).json()
    assert (status["status"], status["failureReason"]) == ("CANCELLED", "stop")
    events = await client.app[STORE].event_history("cx")
    assert "job.completed" not in [e["type"] for e in events]


async def test_sweeper_fails_what_no_worker_holds(agg_client: Callable[..., Any]) -> None:
    client = await agg_client(aggregation_workers=0, aggregation_timeout_seconds=1.0)
    await report_all(client, "orphan", 1)
    status = await final_status(client, "orphan", within=5)
    assert status["status"] == "FAILED"
    assert "did not finish within 1 s" in status["failureReason"]


async def test_bad_deadline_and_backend_are_400(agg_client: Callable[..., Any], client: Client) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"deadline": "yesterday"}, "invalid_field"),
        ({"deadline": "2001-01-01T00:00:00Z"}, "invalid_field"),
        ({"deadline": -5}, "invalid_field"),
        ({"deadline": 1e12}, "invalid_field"),
        ({"deadline": True}, "invalid_field"),
        ({"aggregation": "magic"}, "invalid_field"),
        ({"aggregation": "smpc"}, "backend_unavailable"),  # `client` has no coordinator configured
    ]
    for body, code in cases:
        resp = await client.post("/api/update", json={"jobId": "d", "clientId": "c", "totalClients": 2, **body})
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] == code, body


async def test_the_coordinator_may_push_the_result(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    coordinator.push = True
    coordinator.outputs["pushed"] = OUTPUT
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client = await agg_client(port=port, public_base_url=base, smpc_poll_max_interval_seconds=30)
    await report_all(client, "pushed", 2)
    status = await final_status(client, "pushed")
    assert status["status"] == "COMPLETED"
    assert [code for _, code in coordinator.pushed] == [200]
    url = coordinator.pushed[0][0]
    assert url.startswith(f"{base}/api/smpc/callback/pushed?token=")
    # Polling was only the fallback: the one poll made right after the trigger, no more.
    assert coordinator.polls["pushed"] <= 1
    # Pushing again, with a forged token, for an unknown job or with a bad body: refused, nothing changes.
    again = await client.post(url.removeprefix(base), json={"status": "COMPLETED", "computationOutput": OUTPUT})
    assert again.status == 409
    assert (await client.post("/api/smpc/callback/none?token=x", json={"status": "FAILED"})).status == 404
    assert (await client.post("/api/smpc/callback/pushed?token=x", json={"status": "maybe"})).status == 400
    assert (await final_status(client, "pushed"))["aggregatedResults"] == status["aggregatedResults"]


async def test_a_forged_callback_is_refused(agg_client: Callable[..., Any], coordinator: FakeCoordinator) -> None:
    coordinator.hold = asyncio.Event()
    port = free_port()
    client = await agg_client(port=port, public_base_url=f"http://127.0.0.1:{port}")
    await report_all(client, "forge", 1)
    await asyncio.wait_for(coordinator.triggered.wait(), 5)
    resp = await client.post(
        "/api/smpc/callback/forge?token=guess", json={"status": "COMPLETED", "computationOutput": OUTPUT}
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "invalid_token"
    # A number beyond a double, from anyone: a 400 as the body is read, never a 500.
    huge = await client.post(
        "/api/smpc/callback/forge?token=guess",
        data=b'{"status": "COMPLETED", "computationOutput": [1e400]}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status == 400 and (await huge.json())["error"]["code"] == "invalid_json"
    assert (await (await client.get("/api/job-status/forge")).json())["status"] == "AGGREGATING"


async def test_derived_values_that_are_not_numbers_fail_at_once(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    client = await agg_client()
    schema = [{"name": "b", "dataType": "BOOLEAN"}]
    coordinator.outputs["tiny"] = [1e-300, 1e300]  # a percentage of infinity
    for cid in ("a", "b"):
        body = {"jobId": "tiny", "clientId": cid, "totalClients": 2, "schema": schema}
        assert (await client.post("/api/update", json=body)).status == 200
    status = await final_status(client, "tiny", within=5)
    assert status["status"] == "FAILED"
    assert status["failureReason"].startswith("cannot decode the aggregate")


async def test_a_trigger_an_earlier_attempt_may_have_made_is_not_repeated(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    import time

    import aiohttp

    from orchestrator.aggregation.backends import Vector
    from orchestrator.aggregation.smpc import SmpcBackend
    from orchestrator.aggregation.worker import _Context
    from orchestrator.typedefs import SETTINGS

    client = await agg_client(aggregation_workers=0)
    coordinator.outputs["re"] = OUTPUT  # the coordinator knows the job (and has its result)
    await report_all(client, "re", 3)
    store = client.app[STORE]
    dead = await store.start_attempt("re", "worker-that-died")
    assert dead is not None
    # The first attempt got as far as triggering, then died before recording it.
    assert await store.prepare_trigger(dead, "first-token") == ("first-token", False)
    second = await store.start_attempt("re", "new-worker")
    assert second is not None and not second.triggered
    async with aiohttp.ClientSession() as session:
        settings = client.app[SETTINGS].with_overrides(
            smpc_request_timeout_seconds=1, smpc_poll_interval_seconds=0.05, smpc_poll_max_interval_seconds=0.1
        )
        backend = SmpcBackend(session, settings)
        outcome = await backend.aggregate(_Context(store, second, time.time() + 10))
    assert isinstance(outcome, Vector)
    assert coordinator.triggers.get("re", 0) == 0  # asked, found it known, polled: no second trigger
    # The token the coordinator may call back with is kept.
    third = await store.start_attempt("re", "another")
    assert third is not None
    assert await store.prepare_trigger(third, "other") == ("first-token", True)


async def test_smpc_at_the_deadline_with_a_quorum_triggers_the_reporters(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    """k of n with the coordinator: at the deadline, 2 of 3 reported and 2 are enough: the coordinator is
    triggered with those two as `clients`, and the result says who is in it and who is not."""
    coordinator.outputs["quorum"] = OUTPUT
    client = await agg_client()
    for cid in ("a", "b"):
        body = {"jobId": "quorum", "clientId": cid, "totalClients": 3, "minClients": 2, "deadline": 0.5}
        resp = await client.post("/api/update", json={**body, "schema": DETAILED_SCHEMA})
        assert resp.status == 200, await resp.text()
    status = await final_status(client, "quorum", within=10)
    assert status["status"] == "COMPLETED", status
    assert coordinator.trigger_bodies["quorum"][0]["clients"] == ["a", "b"]
    assert (status["contributors"], status["missingClients"], status["missingCount"]) == (["a", "b"], [], 1)
    assert (status["metadata"]["totalClients"], status["metadata"]["doneCount"]) == (3, 2)
    job = await (await client.get("/api/jobs/quorum")).json()
    assert job["participation"]["closedBy"] == "deadline"
