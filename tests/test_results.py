"""Results delivery: the results API and files, at least once, nothing lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from orchestrator.app import create_app
from orchestrator.results.formats import as_json, as_text, file_name, payload, safe_name
from orchestrator.results.handler import AggregatedResultsHandler
from orchestrator.settings import Settings
from orchestrator.typedefs import STORE
from tests.fake_results_api import FakeResultsApi

Client = TestClient[Any, Any]
FEATURES = [
    {"featureName": "age", "dataType": "NUMERIC", "aggregatedNotNull": 1000, "count": 1000, "sum": 45000, "mean": 45.0},
    {
        "featureName": "is_employed",
        "dataType": "BOOLEAN",
        "aggregatedNotNull": 1000,
        "aggregatedTrue": 750,
        "percentage": 75.0,
    },
]


@pytest.fixture
def results_api() -> FakeResultsApi:
    return FakeResultsApi()


@pytest.fixture
def delivery_client(
    redis_client: aioredis.Redis,
    settings: Settings,
    results_api: FakeResultsApi,
    aiohttp_server: Callable[..., Any],
    aiohttp_client: Callable[..., Any],
) -> Callable[..., Any]:
    async def make(**overrides: Any) -> Client:
        server = await aiohttp_server(results_api.app())
        options: dict[str, Any] = {
            "results_api_url": str(server.make_url("/results")),
            "aggregation_workers": 2,
            "delivery_backoff_seconds": 0.05,
            "delivery_max_backoff_seconds": 0.2,
            **overrides,
        }
        return await aiohttp_client(create_app(settings.with_overrides(**options), redis=redis_client))  # type: ignore[no-any-return]

    return make


async def complete_job(client: Client, job: str) -> None:
    for cid in ("c1", "c2"):
        resp = await client.post("/api/update", json={"jobId": job, "clientId": cid, "totalClients": 2})
        assert resp.status == 200


async def deliveries_settled(client: Client, job: str, within: float = 10) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for _ in range(int(within / 0.05)):
        status = await (await client.get(f"/api/job-status/{job}")).json()
        deliveries = status.get("deliveries") or {}
        if deliveries and all(d["state"] != "pending" for d in deliveries.values()):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries of {job} did not settle: {status}")


async def test_api_fails_then_accepts_exactly_once(
    delivery_client: Callable[..., Any], results_api: FakeResultsApi
) -> None:
    results_api.fail_first = 3
    client = await delivery_client(enable_filesystem_saving=False)
    await complete_job(client, "api1")
    status = await deliveries_settled(client, "api1")
    api = status["deliveries"]["api"]
    assert (api["state"], api["attempts"], api["httpStatus"]) == ("delivered", 4, 201)
    assert len(results_api.calls) == 4 and len(results_api.accepted) == 1
    keys = {call["headers"]["Idempotency-Key"] for call in results_api.calls}
    assert len(keys) == 1
    body = results_api.accepted[0]["body"]
    assert (body["jobId"], body["clientList"], body["totalClients"]) == ("api1", ["c1", "c2"], 2)
    assert set(body) == {"jobId", "timestamp", "clientList", "totalClients", "aggregatedResults", "metadata"} | {
        "contributors",
        "missingClients",
        "missingCount",
    }
    assert (body["contributors"], body["missingClients"], body["missingCount"]) == (["c1", "c2"], [], 0)
    events = [e["type"] for e in await client.app[STORE].event_history("api1")]
    assert events.count("delivery.succeeded") == 1 and "delivery.failed" not in events
    history = await client.get("/api/jobs/api1")
    assert (await history.json())["deliveries"]["api"]["state"] == "delivered"


async def test_a_job_id_used_again_after_expiry_gets_another_idempotency_key(
    delivery_client: Callable[..., Any], results_api: FakeResultsApi
) -> None:
    """Once the tombstone of an expired job lapses, a new job of the same id starts its versions again; its
    result is another result, so a receiver that drops repeated Idempotency-Keys must not drop it."""
    client = await delivery_client(enable_filesystem_saving=False)
    store = client.app[STORE]
    versions = []
    for _ in range(2):
        await complete_job(client, "again")
        status = await deliveries_settled(client, "again")
        assert status["deliveries"]["api"]["state"] == "delivered"
        versions.append((status["version"], status["instanceId"]))
        await store.expire_stale(now=10**15)
        await store.redis.delete(store.keys.tombstone("again"))  # as if its TTL had lapsed
    assert versions[0][0] == versions[1][0] and versions[0][1] != versions[1][1]
    keys = [call["headers"]["Idempotency-Key"] for call in results_api.accepted]
    assert len(keys) == 2 and keys[0] != keys[1]


def test_a_job_stored_before_instances_keeps_its_idempotency_key() -> None:
    """A delivery retried across the upgrade must carry the key it carried before (sha256 of jobId, version)."""
    import hashlib

    from orchestrator.results.formats import idempotency_key

    assert idempotency_key("j", "", 7) == hashlib.sha256(b"j\x007").hexdigest()[:32]
    assert idempotency_key("j", "abc", 7) != idempotency_key("j", "", 7)


async def test_a_4xx_is_final_and_can_be_retried(
    delivery_client: Callable[..., Any], results_api: FakeResultsApi
) -> None:
    results_api.fail_first = 1
    results_api.fail_status = 422
    client = await delivery_client(enable_filesystem_saving=False)
    await complete_job(client, "bad")
    status = await deliveries_settled(client, "bad")
    api = status["deliveries"]["api"]
    assert (api["state"], api["attempts"], api["deadLettered"]) == ("failed", 1, True)
    assert "422" in api["reason"]
    text = await (await client.get("/metrics")).text()
    assert 'orchestrator_delivery_dead_letters_total{destination="api"} 1.0' in text
    resp = await client.post("/api/jobs/bad/deliveries/retry")
    assert (await resp.json())["retried"] == ["api"]
    status = await deliveries_settled(client, "bad")
    assert status["deliveries"]["api"]["state"] == "delivered"
    assert (await (await client.post("/api/jobs/bad/deliveries/retry")).json())["retried"] == []
    assert (await client.post("/api/jobs/none/deliveries/retry")).status == 404


async def test_attempts_run_out_then_dead_letter(
    delivery_client: Callable[..., Any], results_api: FakeResultsApi
) -> None:
    results_api.fail_first = 100
    client = await delivery_client(enable_filesystem_saving=False, delivery_attempts=3)
    await complete_job(client, "dead")
    status = await deliveries_settled(client, "dead")
    assert status["deliveries"]["api"] == {
        "state": "failed",
        "attempts": 3,
        "reason": status["deliveries"]["api"]["reason"],
        "deadLettered": True,
    }
    assert len(results_api.calls) == 3
    assert status["status"] == "COMPLETED"  # the result itself is never lost


async def test_unwritable_directory_is_retried_and_nothing_is_lost(
    delivery_client: Callable[..., Any], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the results directory should be")
    target = blocker / "results"
    client = await delivery_client(enable_api_sending=False, results_save_path=str(target), delivery_attempts=50)
    await complete_job(client, "disk")
    for _ in range(100):
        record = (await (await client.get("/api/jobs/disk")).json())["deliveries"].get("file", {})
        if record.get("attempts", 0) >= 2:
            break
        await asyncio.sleep(0.05)
    assert record["state"] == "pending" and "cannot write the results" in record["lastError"]
    assert (await client.get("/healthz")).status == 200
    assert (await (await client.get("/api/job-status/disk")).json())["status"] == "COMPLETED"
    blocker.unlink()  # the disk comes back
    status = await deliveries_settled(client, "disk")
    files = status["deliveries"]["file"]["files"]
    assert [Path(f).suffix for f in files] == [".json", ".txt"]
    assert all(Path(f).parent == target for f in files)


@pytest.mark.parametrize(
    ("api", "files", "destinations"),
    [(True, True, {"api", "file"}), (True, False, {"api"}), (False, True, {"file"}), (False, False, set())],
)
async def test_each_flag_does_only_its_own_thing(
    delivery_client: Callable[..., Any],
    results_api: FakeResultsApi,
    tmp_path: Path,
    api: bool,
    files: bool,
    destinations: set[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    save = tmp_path / "out"
    client = await delivery_client(enable_api_sending=api, enable_filesystem_saving=files, results_save_path=str(save))
    caplog.set_level("INFO", logger="orchestrator.Aggregator")
    await complete_job(client, "flags")
    if destinations:
        status = await deliveries_settled(client, "flags")
        assert set(status["deliveries"]) == destinations
    else:
        for _ in range(100):
            if "Feature 1/0" in caplog.text or "no destination enabled" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert "no destination enabled" in caplog.text
    assert (len(results_api.accepted) == 1) is api
    assert save.exists() is files


def test_hostile_job_ids_stay_inside_the_directory() -> None:
    stamp = datetime(2026, 11, 29, 10, 0, 0, 123000, tzinfo=UTC)
    for hostile in ("..", "../../etc/passwd", "/abs", "a/../../b", "...", "", "c:\\\\x", "x" * 500, "\u202e.."):
        name = file_name(hostile, stamp, "json")
        assert "/" not in name and "\\\\" not in name and not name.startswith(".")
        assert name.startswith("aggregated_results_") and name.endswith("_20261129T100000123000Z.json")
    assert safe_name("job:1.2_x-y") == "job_1.2_x-y"


async def test_handler_formats_and_flags(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    handler = AggregatedResultsHandler(default_save_path=str(tmp_path), enable_api_sending=False)
    out = await handler.send_and_save(FEATURES, "../job_123", ["client1", "client2"])
    assert (out["api_success"], out["save_success"]) == (False, True)
    json_file, txt_file = (Path(f) for f in out["files"])
    assert json_file.parent == tmp_path and txt_file.parent == tmp_path
    data = json.loads(json_file.read_text())
    assert data["jobId"] == "../job_123" and data["clientList"] == ["client1", "client2"]
    assert data["aggregatedResults"] == FEATURES and data["totalClients"] == 2
    text = txt_file.read_text()
    assert "Feature 1/2: age (NUMERIC)\n  → NotNull: 1000, Sum: 45000, Avg: 45.0\n" in text
    assert "Feature 2/2: is_employed (BOOLEAN)\n  → NotNull: 1000, True: 750, Percentage: 75.0%\n" in text
    quiet = AggregatedResultsHandler(
        default_save_path=str(tmp_path / "never"), enable_api_sending=False, enable_filesystem_saving=False
    )
    caplog.set_level("INFO", logger="orchestrator.Aggregator")
    out = await quiet.send_and_save(FEATURES, "j", ["c"])
    assert out["logged"] and not (tmp_path / "never").exists()
    assert (
        "Feature 1/2: age (NUMERIC)" in caplog.text and "→ NotNull: 1000, True: 750, Percentage: 75.0%" in caplog.text
    )


def test_known_json_and_text() -> None:
    data = payload("job_123", FEATURES, ["a", "b"], {"totalFeatures": 2}, datetime(2026, 11, 29, tzinfo=UTC))
    assert json.loads(as_json(data)) == {
        "jobId": "job_123",
        "timestamp": "2026-11-29T00:00:00.000Z",
        "clientList": ["a", "b"],
        "totalClients": 2,
        "aggregatedResults": FEATURES,
        "metadata": {"totalFeatures": 2},
    }
    assert as_text(data) == (
        "Aggregated results for job job_123\n"
        "Generated: 2026-11-29T00:00:00.000Z\n"
        "Clients (2): a, b\n"
        "\n"
        "Feature 1/2: age (NUMERIC)\n"
        "  → NotNull: 1000, Sum: 45000, Avg: 45.0\n"
        "Feature 2/2: is_employed (BOOLEAN)\n"
        "  → NotNull: 1000, True: 750, Percentage: 75.0%\n"
    )


async def test_a_final_delivery_state_is_not_overwritten(
    delivery_client: Callable[..., Any], results_api: FakeResultsApi
) -> None:
    results_api.fail_first = 1
    results_api.fail_status = 400
    client = await delivery_client(enable_filesystem_saving=False)
    await complete_job(client, "final")
    await deliveries_settled(client, "final")
    store = client.app[STORE]
    # A stale worker, or a replayed call, cannot bring a dead-lettered delivery back to pending.
    assert not await store.record_delivery("final", "api", {"state": "pending", "attempts": 1})
    assert not await store.record_delivery("final", "api", {"state": "failed", "attempts": 9}, event="delivery.failed")
    assert (await store.delivery("final", "api"))["attempts"] == 1
    events = [e["type"] for e in await store.event_history("final")]
    assert events.count("delivery.failed") == 1
    # A delivery of a job that has expired records nothing (and creates no stray job).
    assert not await store.record_delivery("never", "api", {"state": "delivered"})
    assert (await client.get("/api/job-status/never")).status == 404
