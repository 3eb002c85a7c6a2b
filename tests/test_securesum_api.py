"""The secure sum through the HTTP API, on fakeredis and the real Redis: the key round, masked updates,
every refusal (with nothing stored changing), and what the service keeps of a client."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from orchestrator.client import OrchestratorClient
from orchestrator.securesum.layout import OverflowRisk, RowError, VectorLayout
from orchestrator.securesum.masking import encode_key, generate_private_key, mask_vector, public_key_bytes
from orchestrator.securesum.participant import submit_statistics
from orchestrator.securesum.store import VectorStore
from orchestrator.typedefs import STORE, VECTORS

Client = TestClient[Any, Any]
SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]
LAYOUT = VectorLayout.from_schema(SCHEMA)


def key_body(client_id: str, total: int = 2, **extra: Any) -> dict[str, Any]:
    key = encode_key(public_key_bytes(generate_private_key()))
    return {"clientId": client_id, "totalClients": total, "publicKey": key, "schema": SCHEMA, **extra}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def snapshot(client: Client, job_id: str) -> dict[str, Any]:
    """What is stored of a job, to show a refused request changed nothing."""
    job = await (await client.get(f"/api/jobs/{job_id}")).json()
    keys = await (await client.get(f"/api/jobs/{job_id}/keys")).json()
    return {"job": job, "keys": keys}


async def complete_key_round(client: Client, job_id: str, total: int) -> dict[str, Any]:
    """Register ``total`` clients' keys; returns clientId -> private key."""
    private = {}
    for i in range(total):
        key = generate_private_key()
        private[f"c{i}"] = key
        body = {"clientId": f"c{i}", "totalClients": total, "publicKey": encode_key(public_key_bytes(key))}
        resp = await client.post(f"/api/jobs/{job_id}/keys", json={**body, "schema": SCHEMA})
        assert resp.status == 201, await resp.text()
    return private


async def instance_of(client: Client, job_id: str) -> str:
    instance = (await (await client.get(f"/api/jobs/{job_id}/keys")).json())["instanceId"]
    assert isinstance(instance, str) and len(instance) == 32
    return instance


def masked_for(
    job_id: str, instance_id: str, client_id: str, private: dict[str, Any], rows: list[dict[str, Any]]
) -> bytes:
    public = {c: public_key_bytes(k) for c, k in private.items()}
    values = LAYOUT.encode(rows)
    return mask_vector(
        values,
        job_id=job_id,
        instance_id=instance_id,
        client_id=client_id,
        private_key=private[client_id],
        public_keys=public,
    ).tobytes()


async def test_key_round_then_masked_updates_complete_the_job(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=2)
    first = await client.post("/api/jobs/s1/keys", json=key_body("a", 2))
    assert first.status == 201
    body = await first.json()
    assert (body["keyCount"], body["complete"], body["alreadyRegistered"]) == (1, False, False)
    job = await (await client.get("/api/jobs/s1")).json()
    assert job["aggregation"] == "secure-sum"
    assert job["keyRound"] == {"keyCount": 1, "totalClients": 2, "complete": False}
    assert (await (await client.get("/api/jobs/s1/keys")).json())["complete"] is False

    second = key_body("b", 2)
    del second["schema"]  # only the key that creates the job needs it
    assert (await client.post("/api/jobs/s1/keys", json=second)).status == 201
    keys = await (await client.get("/api/jobs/s1/keys")).json()
    assert keys["complete"] is True
    assert [k["clientId"] for k in keys["keys"]] == ["a", "b"]
    history = [(e["type"], e.get("keyCount")) for e in await client.app[STORE].event_history("s1")]
    assert history == [("job.created", None), ("keys.registered", 1), ("keys.registered", 2), ("keys.complete", 2)]


async def test_repeated_key_is_idempotent_replaced_until_the_round_completes(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    body = key_body("a", 2)
    assert (await client.post("/api/jobs/s2/keys", json=body)).status == 201
    again = await client.post("/api/jobs/s2/keys", json=body)
    assert again.status == 200
    assert (await again.json())["alreadyRegistered"] is True
    # The same 32 bytes in another base64 spelling (the last character's two unused low bits) is the same key.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    key = body["publicKey"]
    spelled = key[:-2] + alphabet[alphabet.index(key[-2]) ^ 1] + "="
    assert spelled != key and base64.b64decode(spelled) == base64.b64decode(key)
    respelled = await client.post("/api/jobs/s2/keys", json={**body, "publicKey": spelled})
    assert (respelled.status, (await respelled.json())["alreadyRegistered"]) == (200, True)
    # A client that lost its key may register another until the round completes (nobody used the first)...
    replacement = key_body("a", 2)
    replaced = await client.post("/api/jobs/s2/keys", json=replacement)
    assert replaced.status == 200
    assert (await replaced.json())["replaced"] is True
    keys = await (await client.get("/api/jobs/s2/keys")).json()
    assert keys["keys"] == [{"clientId": "a", "publicKey": replacement["publicKey"]}]
    assert (await client.post("/api/jobs/s2/keys", json=key_body("b", 2, schema=None))).status == 201
    # ...but not once it is complete: other clients may have masked with it.
    before = await snapshot(client, "s2")
    other = await client.post("/api/jobs/s2/keys", json=key_body("a", 2))
    assert other.status == 409
    assert (await other.json())["error"]["code"] == "key_conflict"
    assert await snapshot(client, "s2") == before
    history = [(e["type"], e.get("replaced")) for e in await client.app[STORE].event_history("s2")]
    assert history[1:] == [
        ("keys.registered", False),
        ("keys.registered", True),
        ("keys.registered", False),
        ("keys.complete", None),
    ]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"publicKey": "not base64!"}, 400, "invalid_public_key"),
        ({"publicKey": b64(b"x" * 31)}, 400, "invalid_public_key"),
        ({"publicKey": b64(bytes(32))}, 400, "invalid_public_key"),
        ({"publicKey": b64((2**255 - 19).to_bytes(32, "little"))}, 400, "invalid_public_key"),
        ({"publicKey": b64(bytes(31) + b"\x80")}, 400, "invalid_public_key"),
        ({"schema": []}, 400, "invalid_schema"),
        ({"schema": [{"name": "x", "dataType": "NUMERIC", "bounds": [0, 10**400]}]}, 400, "overflow_risk"),
        (
            {"totalClients": 20000, "schema": [{"name": "c", "dataType": "NOMINAL", "categories": ["a"] * 1}]},
            400,
            "job_too_large",
        ),
        ({"publicKey": 5}, 400, "invalid_public_key"),
        ({"publicKey": None}, 400, "missing_field"),
        ({"totalClients": 1}, 400, "invalid_field"),
        ({"schema": None}, 400, "schema_required"),
        ({"schema": [{"name": "x", "dataType": "NUMERIC"}]}, 400, "invalid_schema"),
        ({"schema": [{"name": "x", "dataType": "NUMERIC", "bounds": [0, 1e9], "scale": 4}]}, 400, "overflow_risk"),
        ({"maxRows": 0}, 400, "invalid_field"),
        ({"clientId": "bad id"}, 400, "invalid_field"),
    ],
)
async def test_bad_key_requests_are_refused_and_create_nothing(
    make_client: Callable[..., Any], change: dict[str, Any], status: int, code: str
) -> None:
    client = await make_client(max_job_bytes=100_000)
    body = {k: v for k, v in {**key_body("a", 2), **change}.items() if v is not None}
    resp = await client.post("/api/jobs/s3/keys", json=body)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code
    assert (await client.get("/api/jobs/s3")).status == 404


async def test_key_round_conflicts(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    assert (await client.post("/api/jobs/s4/keys", json=key_body("a", 2))).status == 201
    cases = [
        (key_body("b", 3), "total_clients_mismatch"),
        (key_body("b", 2, schema=SCHEMA[:1]), "schema_mismatch"),
        (key_body("b", 2, maxRows=5), "max_rows_mismatch"),
    ]
    for body, code in cases:
        resp = await client.post("/api/jobs/s4/keys", json=body)
        assert (resp.status, (await resp.json())["error"]["code"]) == (409, code)
    # maxRows is compared only when given: omitted, the job's stands.
    assert (await client.post("/api/jobs/s4/keys", json=key_body("b", 2))).status == 201
    full = await client.post("/api/jobs/s4/keys", json=key_body("c", 2))
    assert (full.status, (await full.json())["error"]["code"]) == (409, "keys_complete")
    # A job that is not a secure-sum job has no key round.
    await client.post("/api/update", json={"jobId": "plain", "clientId": "a", "totalClients": 2})
    for schema in (None, SCHEMA):
        resp = await client.post("/api/jobs/plain/keys", json=key_body("b", 2, schema=schema))
        assert (resp.status, (await resp.json())["error"]["code"]) == (409, "not_secure_sum")
    resp = await client.get("/api/jobs/plain/keys")
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "not_secure_sum")
    assert (await client.get("/api/jobs/nothing/keys")).status == 404


async def test_vector_refusals_change_nothing(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    job = "s5"
    # Before the key round completes: refused.
    first = key_body("c0", 3)
    assert (await client.post(f"/api/jobs/{job}/keys", json=first)).status == 201
    early = {"jobId": job, "clientId": "c0", "totalClients": 3, "vector": b64(bytes(8 * LAYOUT.length))}
    resp = await client.post("/api/update", json=early)
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "keys_incomplete")
    for i in (1, 2):
        assert (await client.post(f"/api/jobs/{job}/keys", json=key_body(f"c{i}", 3, schema=None))).status == 201
    before = await snapshot(client, job)
    vectors: VectorStore = client.app[VECTORS]

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"vector": b64(bytes(8 * (LAYOUT.length - 1)))}, 400, "vector_length_mismatch"),
        ({"vector": b64(bytes(8 * LAYOUT.length + 3))}, 400, "invalid_vector"),
        ({"vector": "%%%"}, 400, "invalid_vector"),
        ({"vector": 17}, 400, "invalid_vector"),
        ({"vector": None}, 400, "vector_required"),
        ({"clientId": "stranger"}, 409, "not_a_participant"),
        ({"totalClients": 4}, 409, "total_clients_mismatch"),
    ]
    for change, status, code in cases:
        body = {k: v for k, v in {**early, **change}.items() if v is not None}
        resp = await client.post("/api/update", json=body)
        assert (resp.status, (await resp.json())["error"]["code"]) == (status, code), change
    assert await snapshot(client, job) == before
    assert await vectors.stored_vector(job, "c0") is None

    # A vector for a job that takes none; a vector-less update of a job that needs one.
    await client.post("/api/update", json={"jobId": "plain", "clientId": "a", "totalClients": 2})
    resp = await client.post(
        "/api/update", json={"jobId": "plain", "clientId": "b", "totalClients": 2, "vector": b64(bytes(8))}
    )
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "vector_not_expected")
    assert (await (await client.get("/api/jobs/plain")).json())["doneCount"] == 1
    # An octet-stream update of a job that does not exist: the key round must come first.
    resp = await client.post(
        "/api/update?jobId=ghost&clientId=a&totalClients=2&aggregation=secure-sum",
        data=bytes(16),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "keys_incomplete")
    assert (await client.get("/api/jobs/ghost")).status == 404


async def test_only_the_vector_may_take_a_body_past_max_body_bytes(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_vector_body_bytes=64 * 1024, max_body_bytes=2048)
    padded = {"jobId": "j", "clientId": "a", "totalClients": 2, "vector": None, "note": "x" * 8000}
    assert (await client.post("/api/update", json=padded)).status == 413
    padded["vector"] = "AAAAAAAAAAA="
    assert (await client.post("/api/update", json=padded)).status == 413
    assert (await client.get("/api/jobs/j")).status == 404


async def test_binary_update_of_a_missing_job_follows_the_default_backend(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_backend="sum")
    resp = await client.post(
        "/api/update?jobId=ghost&clientId=a&totalClients=2",
        data=bytes(16),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "schema_required")


async def test_oversized_vector_body_is_413(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_vector_body_bytes=4096, max_body_bytes=2048)
    resp = await client.post(
        "/api/update?jobId=j&clientId=a&totalClients=2",
        data=bytes(8192),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status == 413
    # A plain update is held to MAX_BODY_BYTES even though vectors may be larger.
    big = {
        "jobId": "j",
        "clientId": "a",
        "totalClients": 2,
        "schema": [{"name": "x" * 200, "dataType": "BOOLEAN"}] * 20,
    }
    assert (await client.post("/api/update", json=big)).status == 413


async def test_what_the_service_stores_is_not_the_clients_vector(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1)
    private = await complete_key_round(client, "s6", 3)
    instance = await instance_of(client, "s6")
    rows: dict[str, list[dict[str, Any]]] = {
        "c0": [{"age": 30, "smoker": True, "blood": "A"}],
        "c1": [{"age": 50}],
        "c2": [{"blood": "O"}],
    }
    for client_id in ("c0", "c1", "c2"):
        masked = masked_for("s6", instance, client_id, private, rows[client_id])
        stored_before = await client.app[VECTORS].stored_vector("s6", client_id)
        resp = await client.post(
            f"/api/update?jobId=s6&clientId={client_id}&totalClients=3",
            data=masked,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert resp.status == 200, await resp.text()
        assert stored_before is None
        if client_id != "c2":  # the last update completes the job, whose vectors are then dropped
            stored = await client.app[VECTORS].stored_vector("s6", client_id)
            assert stored == masked
            assert stored != LAYOUT.encode(rows[client_id]).view("<u8").tobytes()
    async with OrchestratorClient(str(client.make_url("")).rstrip("/")) as orchestrator:
        final = await orchestrator.wait_for_completion("s6", timeout=20)
    age, smoker, blood = final["aggregatedResults"]
    assert (age["count"], age["sum"], smoker["aggregatedTrue"], blood["categoryCounts"]) == (
        2,
        80.0,
        1,
        {"A": 1, "B": 0, "O": 1},
    )
    assert await client.app[VECTORS].stored_vector("s6", "c0") is None


async def test_a_rerun_of_a_job_id_with_the_same_keys_repeats_no_mask(make_client: Callable[..., Any]) -> None:
    """A jobId used again after its job expired, by clients that kept their keys: the new instance gets
    another instanceId, every stored vector differs from the first run's (so their difference tells the
    service nothing), and the sums still differ by exactly the one client's change."""
    client = await make_client(aggregation_workers=0)
    private = {f"c{i}": generate_private_key() for i in range(3)}
    rows: dict[str, list[dict[str, Any]]] = {
        "c0": [{"age": 30, "smoker": True, "blood": "A"}],
        "c1": [{"age": 50.5}],
        "c2": [{"blood": "O", "smoker": False}],
    }
    results = []
    instances: list[str] = []
    for run, age in enumerate([30, 70]):
        job = "s7"  # the same job id and keys in both runs
        if run:  # start the job afresh (cancel it, then expire it at once)
            await client.post(f"/api/jobs/{job}/cancel")
            await client.app[STORE].expire_stale(now=10**15)
        for client_id, key in private.items():
            body = {
                "clientId": client_id,
                "totalClients": 3,
                "publicKey": encode_key(public_key_bytes(key)),
                "schema": SCHEMA,
            }
            assert (await client.post(f"/api/jobs/{job}/keys", json=body)).status == 201
        rows["c0"][0]["age"] = age
        stored = {}
        instance = await instance_of(client, job)
        instances.append(instance)
        for client_id in private:
            masked = masked_for(job, instance, client_id, private, rows[client_id])
            resp = await client.post(
                f"/api/update?jobId={job}&clientId={client_id}&totalClients=3",
                data=masked,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert resp.status == 200
            stored[client_id] = await client.app[VECTORS].stored_vector(job, client_id)
        total = await client.app[VECTORS].sum_vectors(job, sorted(private), LAYOUT.length)
        results.append((stored, total.view("<i8").copy()))
    (first, sum1), (second, sum2) = results
    assert instances[0] != instances[1]
    assert all(first[c] != second[c] for c in private)
    delta = (sum2 - sum1).tolist()
    assert delta == [0, 400, 700**2 - 300**2, 0, 0, 0, 0, 0, 0]


async def test_client_library_refuses_overflow_and_bad_rows_before_sending(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    url = str(client.make_url("")).rstrip("/")
    wide: list[dict[str, Any]] = [{"name": "x", "dataType": "NUMERIC", "bounds": [-1e7, 1e7], "scale": 2}]
    async with OrchestratorClient(url) as orchestrator:
        with pytest.raises(OverflowRisk, match="rows per client fit"):
            await submit_statistics(orchestrator, "s8", "a", 10, wide, [{"x": 1}])
        with pytest.raises(RowError, match="outside the declared bounds"):
            await submit_statistics(orchestrator, "s8", "a", 2, SCHEMA, [{"age": 500}])
    assert (await client.get("/api/jobs/s8")).status == 404


async def test_sum_backend_takes_plain_vectors(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1)
    url = str(client.make_url("")).rstrip("/")
    async with OrchestratorClient(url) as orchestrator:
        for i, age in enumerate([20, 40]):
            await submit_statistics(
                orchestrator, "s9", f"c{i}", 2, SCHEMA, [{"age": age, "smoker": i == 0}], aggregation="sum"
            )
        final = await orchestrator.wait_for_completion("s9", timeout=20)
    assert final["status"] == "COMPLETED"
    age, smoker, _ = final["aggregatedResults"]
    assert (age["count"], age["sum"], age["mean"]) == (2, 60.0, 30.0)
    assert (smoker["aggregatedNotNull"], smoker["aggregatedTrue"]) == (2, 1)
    assert final["metadata"]["aggregation"] == "sum"
    # maxRows: omitted, the job's stands; declared, it must be the job's.
    big_rows = {"jobId": "s11", "totalClients": 3, "schema": SCHEMA, "aggregation": "sum", "maxRows": 10}
    vector = b64(LAYOUT.encode([{"age": 1}]).view("<u8").tobytes())
    assert (await client.post("/api/update", json={**big_rows, "clientId": "a", "vector": vector})).status == 200
    del big_rows["maxRows"]
    assert (await client.post("/api/update", json={**big_rows, "clientId": "b", "vector": vector})).status == 200
    resp = await client.post("/api/update", json={**big_rows, "clientId": "c", "vector": vector, "maxRows": 11})
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "max_rows_mismatch")
    # The sum job refuses a vector-less update and one created without a schema.
    resp = await client.post(
        "/api/update", json={"jobId": "s10", "clientId": "a", "totalClients": 2, "aggregation": "sum"}
    )
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "schema_required")
    np.testing.assert_array_equal(LAYOUT.encode([]), np.zeros(LAYOUT.length, dtype=np.int64))


async def test_sum_backend_by_configuration(make_client: Callable[..., Any]) -> None:
    """With AGGREGATION_BACKEND=sum, an update that names no backend creates a sum job."""
    client = await make_client(aggregation_backend="sum", aggregation_workers=1)
    for i in range(2):
        vector = LAYOUT.encode([{"age": 10 * (i + 1), "blood": "B"}]).view("<u8").tobytes()
        body = {"jobId": "cfg", "clientId": f"c{i}", "totalClients": 2, "schema": SCHEMA, "vector": b64(vector)}
        assert (await client.post("/api/update", json=body)).status == 200
    async with OrchestratorClient(str(client.make_url("")).rstrip("/")) as orchestrator:
        final = await orchestrator.wait_for_completion("cfg", timeout=20)
    assert final["metadata"]["aggregation"] == "sum"
    assert final["aggregatedResults"][0]["sum"] == 30.0
    assert final["aggregatedResults"][2]["categoryCounts"] == {"A": 0, "B": 2, "O": 0}
