"""The HTTP API against fakeredis and the real Redis (the redis_client fixture runs both)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from orchestrator.models import JobStatus
from orchestrator.typedefs import STORE
from tests.support import DETAILED_SCHEMA, SHORT_SCHEMA

Client = TestClient[Any, Any]


async def post_update(client: Client, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/update", json=body)
    return resp.status, await resp.json()


async def test_first_update_creates_job_in_original_shape(client: Client) -> None:
    status, body = await post_update(
        client, jobId="shared_job_123", clientId="client_A", totalClients=3, schema=SHORT_SCHEMA
    )
    assert status == 200
    assert body["message"] == "Update for job shared_job_123, client client_A recorded."
    assert body["alreadyRecorded"] is False

    resp = await client.get("/api/job-status/shared_job_123")
    assert resp.status == 200
    job = await resp.json()
    assert job["status"] == "IN_PROGRESS"
    assert job["jobId"] == "shared_job_123"
    assert job["message"] == "Job shared_job_123 is in progress (doneCount=1/3)."
    assert job["progress"] == {"doneCount": 1, "totalClients": 3, "percentage": 33.33}
    assert job["jobInfo"] == {
        "totalClients": 3,
        "doneCount": 1,
        "schema": SHORT_SCHEMA,
        "finalResult": None,
        "updatedClients": ["client_A"],
    }


async def test_all_clients_done_moves_to_aggregating(client: Client) -> None:
    for cid in ("c1", "c2", "c3"):
        status, body = await post_update(client, jobId="j1", clientId=cid, totalClients=3, schema=DETAILED_SCHEMA)
        assert status == 200
    assert body["status"] == "AGGREGATING"
    job = await (await client.get("/api/job-status/j1")).json()
    assert job["status"] == "AGGREGATING"
    assert job["message"] == "Job j1 is aggregating (doneCount=3/3)."
    assert job["jobInfo"]["updatedClients"] == ["c1", "c2", "c3"]
    assert job["jobInfo"]["schema"] == DETAILED_SCHEMA


async def test_repeated_update_is_200_and_changes_nothing(client: Client) -> None:
    await post_update(client, jobId="j2", clientId="c1", totalClients=2)
    before = await (await client.get("/api/jobs/j2")).json()
    status, body = await post_update(client, jobId="j2", clientId="c1", totalClients=2)
    assert status == 200
    assert body["alreadyRecorded"] is True
    assert body["message"] == "Update for job j2, client c1 was already recorded."
    after = await (await client.get("/api/jobs/j2")).json()
    assert after == before
    # Also once the job has moved on: real clients treat anything but 200 as failure.
    await post_update(client, jobId="j2", clientId="c2", totalClients=2)
    status, body = await post_update(client, jobId="j2", clientId="c1", totalClients=2)
    assert (status, body["alreadyRecorded"], body["status"]) == (200, True, "AGGREGATING")


async def test_conflicting_total_or_schema_is_409_and_changes_nothing(client: Client) -> None:
    await post_update(client, jobId="j3", clientId="c1", totalClients=3, schema=SHORT_SCHEMA)
    before = await (await client.get("/api/jobs/j3")).json()
    status, body = await post_update(client, jobId="j3", clientId="c2", totalClients=4)
    assert status == 409
    assert body["error"]["code"] == "total_clients_mismatch"
    assert body["error"]["totalClients"] == 3
    status, body = await post_update(
        client, jobId="j3", clientId="c2", totalClients=3, schema=[{"name": "x", "dataType": "BOOLEAN"}]
    )
    assert status == 409
    assert body["error"]["code"] == "schema_mismatch"
    assert await (await client.get("/api/jobs/j3")).json() == before
    # Omitting the schema is fine.
    status, _ = await post_update(client, jobId="j3", clientId="c2", totalClients=3)
    assert status == 200


async def test_schema_arriving_after_creation_is_stored(client: Client) -> None:
    await post_update(client, jobId="j3b", clientId="c1", totalClients=3)
    await post_update(client, jobId="j3b", clientId="c2", totalClients=3, schema=SHORT_SCHEMA)
    job = await (await client.get("/api/jobs/j3b")).json()
    assert job["schema"] == SHORT_SCHEMA


async def test_new_client_on_closed_job_is_409(client: Client) -> None:
    await post_update(client, jobId="j4", clientId="c1", totalClients=1)
    status, body = await post_update(client, jobId="j4", clientId="c2", totalClients=1)
    assert status == 409
    assert body["error"]["code"] == "job_not_collecting"
    job = await (await client.get("/api/jobs/j4")).json()
    assert job["doneCount"] == 1
    assert [c["clientId"] for c in job["clients"]] == ["c1"]


async def test_unknown_job_status_keeps_original_404_shape(client: Client) -> None:
    resp = await client.get("/api/job-status/nope")
    assert resp.status == 404
    assert await resp.json() == {"error": "Unknown jobId nope", "code": "job_not_found"}
    resp = await client.get("/api/job-status/" + "bad%20id")
    assert resp.status == 404
    resp = await client.get("/api/jobs/nope")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "job_not_found"


async def test_full_job_lists_clients_with_times(client: Client) -> None:
    await post_update(client, jobId="j5", clientId="b", totalClients=2, schema=SHORT_SCHEMA)
    await post_update(client, jobId="j5", clientId="a", totalClients=2)
    job = await (await client.get("/api/jobs/j5")).json()
    assert job["status"] == "AGGREGATING"
    assert [c["clientId"] for c in job["clients"]] == ["b", "a"]
    assert all(c["reportedAt"].endswith("Z") for c in job["clients"])
    assert job["version"] == 4  # job.created, client.done b, client.done a, job.aggregating
    assert job["aggregatingAt"] is not None
    assert job["completedAt"] is None


async def test_list_jobs_newest_first_paginated_and_filtered(client: Client) -> None:
    for i in range(7):
        await post_update(client, jobId=f"L{i}", clientId="c1", totalClients=1 if i % 2 else 2)
    resp = await client.get("/api/jobs", params={"limit": "3"})
    page = await resp.json()
    seen = [j["jobId"] for j in page["jobs"]]
    while page["nextCursor"]:
        page = await (await client.get("/api/jobs", params={"limit": "3", "cursor": page["nextCursor"]})).json()
        seen += [j["jobId"] for j in page["jobs"]]
    assert seen == [f"L{i}" for i in reversed(range(7))]

    agg = await (await client.get("/api/jobs", params={"status": "AGGREGATING"})).json()
    assert [j["jobId"] for j in agg["jobs"]] == ["L5", "L3", "L1"]
    assert agg["nextCursor"] is None
    running = await (await client.get("/api/jobs", params={"status": "in_progress", "limit": "2"})).json()
    assert [j["jobId"] for j in running["jobs"]] == ["L6", "L4"]
    assert running["nextCursor"]


async def test_list_jobs_bad_query_is_400(client: Client) -> None:
    for params in ({"status": "DONE"}, {"limit": "0"}, {"limit": "x"}, {"limit": "501"}, {"cursor": "nonsense"}):
        resp = await client.get("/api/jobs", params=params)
        assert resp.status == 400, params
        assert (await resp.json())["error"]["code"] == "invalid_query"


async def test_index_health_ready_metrics(client: Client) -> None:
    index = await (await client.get("/")).json()
    assert index["service"] == "computations-orchestrator"
    assert "/api/openapi.json" in index["links"].values()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    await post_update(client, jobId="m1", clientId="c1", totalClients=1)
    await post_update(client, jobId="m2", clientId="c1", totalClients=2)
    await post_update(client, jobId="m2", clientId="c1", totalClients=2)
    text = await (await client.get("/metrics")).text()
    assert 'orchestrator_updates_total{outcome="recorded"} 2.0' in text
    assert 'orchestrator_updates_total{outcome="duplicate"} 1.0' in text
    assert 'orchestrator_jobs{status="AGGREGATING"} 1.0' in text
    assert 'orchestrator_jobs{status="IN_PROGRESS"} 1.0' in text
    assert "orchestrator_aggregation_triggers_total 1.0" in text
    assert 'orchestrator_http_requests_total{method="POST",route="/api/update",status="200"} 3.0' in text
    assert 'orchestrator_redis_duration_seconds_count{operation="update"} 3.0' in text


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/api/update")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


async def test_cancel(client: Client) -> None:
    await post_update(client, jobId="cx", clientId="a", totalClients=3)
    resp = await client.post("/api/jobs/cx/cancel", json={"reason": "wrong cohort"})
    assert resp.status == 200
    assert await resp.json() == {"jobId": "cx", "status": "CANCELLED", "alreadyCancelled": False, "version": 3}
    again = await client.post("/api/jobs/cx/cancel")
    assert (await again.json())["alreadyCancelled"] is True
    status = await (await client.get("/api/job-status/cx")).json()
    assert status["status"] == "CANCELLED"
    assert status["message"] == "Job cx was cancelled (doneCount=1/3)."
    assert status["failureReason"] == "wrong cohort"
    assert (await post_update(client, jobId="cx", clientId="b", totalClients=3))[0] == 409
    code, body = await post_update(client, jobId="cx", clientId="a", totalClients=3)
    assert (code, body["alreadyRecorded"]) == (200, True)
    listed = await (await client.get("/api/jobs", params={"status": "CANCELLED"})).json()
    assert [j["jobId"] for j in listed["jobs"]] == ["cx"]
    events = await client.app[STORE].event_history("cx")
    assert events[-1]["type"] == "job.cancelled"
    assert (events[-1]["previousStatus"], events[-1]["reason"]) == ("IN_PROGRESS", "wrong cohort")


async def test_cancel_refusals(client: Client) -> None:
    assert (await client.post("/api/jobs/none/cancel")).status == 404
    await post_update(client, jobId="fin", clientId="a", totalClients=1)
    await client.app[STORE].finish_job("fin", JobStatus.COMPLETED, result={"aggregatedResults": []})
    resp = await client.post("/api/jobs/fin/cancel")
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "job_finished"
    await post_update(client, jobId="agg", clientId="a", totalClients=1)
    for bad in (b"{", b'{"reason": 5}', b"[1]", b'{"reason": "\\udc00x"}', b'{"reason": NaN}'):
        resp = await client.post("/api/jobs/agg/cancel", data=bad, headers={"Content-Type": "application/json"})
        assert resp.status == 400
    assert (await (await client.get("/api/jobs/agg")).json())["status"] == "AGGREGATING"
    # An aggregating job may be cancelled; its aggregation then finishes nothing.
    assert (await client.post("/api/jobs/agg/cancel")).status == 200
    assert await client.app[STORE].finish_job("agg", JobStatus.COMPLETED, result={}) == (False, 4)


async def test_completed_job_status_has_results_and_metadata(client: Client) -> None:
    await post_update(client, jobId="done", clientId="a", totalClients=1, schema=SHORT_SCHEMA)
    result = {
        "aggregatedResults": [{"featureName": "age", "dataType": "NUMERIC", "aggregatedNotNull": 10}],
        "metadata": {"totalFeatures": 2, "totalClients": 1, "completedAt": "2026-11-29T00:00:00.000Z", "doneCount": 1},
    }
    await client.app[STORE].finish_job("done", JobStatus.COMPLETED, result=result)
    status = await (await client.get("/api/job-status/done")).json()
    assert status["status"] == "COMPLETED"
    assert status["message"] == "Job done is completed."
    assert status["aggregatedResults"] == result["aggregatedResults"]
    assert status["metadata"] == result["metadata"]
    assert status["jobInfo"]["finalResult"] == result
