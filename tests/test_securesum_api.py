"""The secure sum through the HTTP API, on fakeredis and the real Redis: the keys round, the refusals of the
shares, inputs and unmask rounds (each changing nothing stored), and what the service keeps of a client."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from redis.client import NEVER_DECODE

from orchestrator.client import OrchestratorClient
from orchestrator.securesum.keyfile import KeyFile
from orchestrator.securesum.layout import OverflowRisk, RowError, VectorLayout
from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes
from orchestrator.securesum.participant import DEFAULT_MAX_ROWS, local_statistics, submit_statistics
from orchestrator.securesum.shares import self_mask_seed
from orchestrator.securesum.store import VectorStore
from orchestrator.typedefs import ROUNDS, STORE, VECTORS

Client = TestClient[Any, Any]
SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]
LAYOUT = VectorLayout.from_schema(SCHEMA)
ROWS: dict[str, list[dict[str, Any]]] = {
    "c0": [{"age": 30, "smoker": True, "blood": "A"}],
    "c1": [{"age": 50}],
    "c2": [{"blood": "O"}],
    "c3": [{"age": 20, "smoker": False}],
    "c4": [{"age": 90, "blood": "B"}],
}
KEY = encode_key(public_key_bytes(generate_private_key()))


def public_key() -> str:
    """A fresh X25519 public key, base64."""
    return encode_key(public_key_bytes(generate_private_key()))


def key_body(client_id: str, total: int = 2, **extra: Any) -> dict[str, Any]:
    """A key registration with two fresh keys and the schema; an ``extra`` of None leaves that field out."""
    body = {"clientId": client_id, "totalClients": total, "publicKey": public_key(), "encryptionKey": public_key()}
    return {k: v for k, v in {**body, "schema": SCHEMA, **extra}.items() if v is not None}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def shares_body(client_id: str, recipients: list[str]) -> dict[str, Any]:
    """A share post: one (random, the service reads none) bundle per recipient."""
    return {"clientId": client_id, "shares": [{"to": to, "ciphertext": b64(os.urandom(120))} for to in recipients]}


def unmask_body(client_id: str, index: int, survivors: list[str], dropped: list[str]) -> dict[str, Any]:
    """An unmask answer of the right shape: seed shares (16 bytes) of ``survivors``, key shares (32) of ``dropped``."""

    def shares(of: list[str], size: int) -> list[dict[str, Any]]:
        return [{"of": v, "index": index, "value": b64(os.urandom(size))} for v in of]

    return {"clientId": client_id, "selfMaskShares": shares(survivors, 16), "keyShares": shares(dropped, 32)}


async def snapshot(client: Client, job_id: str) -> dict[str, Any]:
    """Everything stored of a job (its Redis keys, raw) and what the API answers of it: the same before and
    after a refused request shows that the refusal changed nothing."""
    store = client.app[STORE]
    k = store.keys
    raw: dict[str, Any] = {}
    hashes = [k.job(job_id), k.client_times(job_id), k.public_keys(job_id), k.dropped(job_id), *k.protocol_keys(job_id)]
    for key in hashes:
        raw[key] = await store.redis.execute_command("HGETALL", key, **{NEVER_DECODE: True})
    raw["events"] = await store.redis.execute_command("LRANGE", k.events(job_id), 0, -1, **{NEVER_DECODE: True})
    raw["clients"] = await store.redis.execute_command("SMEMBERS", k.updated_clients(job_id), **{NEVER_DECODE: True})
    answers = {}
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/keys"):
        resp = await client.get(path)
        answers[path] = (resp.status, await resp.json())
    return {"raw": raw, "api": answers}


async def refused(client: Client, method: str, path: str, body: Any, status: int, code: str) -> None:
    resp = await client.request(method, path, json=body)
    assert (resp.status, (await resp.json())["error"]["code"]) == (status, code), (path, body)


async def register(client: Client, job_id: str, total: int, ids: list[str], **extra: Any) -> None:
    """Register fresh keys for ``ids`` (the first one creating the job with ``extra``)."""
    for n, client_id in enumerate(ids):
        body = key_body(client_id, total, **extra) if n == 0 else key_body(client_id, total, schema=None)
        resp = await client.post(f"/api/jobs/{job_id}/keys", json=body)
        assert resp.status == 201, await resp.text()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until ``check()`` holds (TimeoutError after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polling the store
            await asyncio.sleep(0.02)


async def keys_of(client: Client, job_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/jobs/{job_id}/keys")
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    return answer


def url_of(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_the_keys_round_closes_when_every_client_registered(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    bodies = {c: key_body(c, 3, minClients=2, roundTimeout=60) for c in "abc"}
    first = await client.post("/api/jobs/s1/keys", json=bodies["a"])
    assert first.status == 201
    body = await first.json()
    assert (body["keyCount"], body["complete"], body["alreadyRegistered"]) == (1, False, False)
    job = await (await client.get("/api/jobs/s1")).json()
    assert job["aggregation"] == "secure-sum"
    assert job["keyRound"] == {"keyCount": 1, "totalClients": 3, "complete": False}
    assert (job["minClients"], job["participation"]["round"]) == (2, "keys")
    keys = await keys_of(client, "s1")
    assert (keys["round"], keys["complete"], keys["participants"]) == ("keys", False, [])
    assert (keys["threshold"], keys["minClients"], keys["totalClients"]) == (2, 2, 3)
    keys_deadline = datetime.fromisoformat(keys["roundDeadline"])

    for client_id in "bc":  # only the key that creates the job needs the schema and the job's settings
        del bodies[client_id]["schema"]
        assert (await client.post("/api/jobs/s1/keys", json=bodies[client_id])).status == 201
    keys = await keys_of(client, "s1")
    assert (keys["round"], keys["complete"], keys["participants"], keys["keyCount"]) == ("shares", True, list("abc"), 3)
    assert keys["keys"] == [
        {"clientId": c, "publicKey": bodies[c]["publicKey"], "encryptionKey": bodies[c]["encryptionKey"]} for c in "abc"
    ]
    # The shares round has a deadline of its own, one roundTimeout from its start.
    assert 0 <= (datetime.fromisoformat(keys["roundDeadline"]) - keys_deadline).total_seconds() < 60
    job = await (await client.get("/api/jobs/s1")).json()
    assert job["keyRound"]["complete"] is True
    participation = job["participation"]
    assert (participation["round"], participation["expected"], participation["waitingFor"]) == (
        "shares",
        list("abc"),
        list("abc"),
    )
    events = await client.app[STORE].event_history("s1")
    history = [(e["type"], e.get("keyCount"), e.get("round")) for e in events]
    assert history == [
        ("job.created", None, None),
        ("keys.registered", 1, None),
        ("keys.registered", 2, None),
        ("keys.registered", 3, None),
        ("round.closed", None, "keys"),
        ("keys.complete", 3, None),
    ]
    closed = events[-2]
    assert (closed["next"], closed["participants"], closed.get("dropped")) == ("shares", 3, None)


async def test_repeated_key_is_idempotent_replaced_until_the_round_completes(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    body = key_body("a", 2)
    assert (await client.post("/api/jobs/s2/keys", json=body)).status == 201
    again = await client.post("/api/jobs/s2/keys", json=body)
    assert again.status == 200
    assert (await again.json())["alreadyRegistered"] is True
    # The same 32 bytes in another base64 spelling (the last character's two unused low bits) is the same key.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for field in ("publicKey", "encryptionKey"):
        key = body[field]
        spelled = key[:-2] + alphabet[alphabet.index(key[-2]) ^ 1] + "="
        assert spelled != key and base64.b64decode(spelled) == base64.b64decode(key)
        respelled = await client.post("/api/jobs/s2/keys", json={**body, field: spelled})
        assert (respelled.status, (await respelled.json())["alreadyRegistered"]) == (200, True)
    # A client that lost its keys may register others until the round completes (nobody used the first)...
    replacement = key_body("a", 2)
    replaced = await client.post("/api/jobs/s2/keys", json=replacement)
    assert replaced.status == 200
    assert (await replaced.json())["replaced"] is True
    keys = await keys_of(client, "s2")
    assert keys["keys"] == [
        {"clientId": "a", "publicKey": replacement["publicKey"], "encryptionKey": replacement["encryptionKey"]}
    ]
    assert (await client.post("/api/jobs/s2/keys", json=key_body("b", 2, schema=None))).status == 201
    # ...but not once it is complete: other clients may have sealed shares or masked with them.
    before = await snapshot(client, "s2")
    for other in (key_body("a", 2), {**replacement, "encryptionKey": public_key()}):
        resp = await client.post("/api/jobs/s2/keys", json=other)
        assert (resp.status, (await resp.json())["error"]["code"]) == (409, "key_conflict")
    # The same keys again are still just a repeat.
    again = await client.post("/api/jobs/s2/keys", json=replacement)
    assert (again.status, (await again.json())["alreadyRegistered"]) == (200, True)
    assert await snapshot(client, "s2") == before
    history = [(e["type"], e.get("replaced")) for e in await client.app[STORE].event_history("s2")]
    assert history[1:] == [
        ("keys.registered", False),
        ("keys.registered", True),
        ("keys.registered", False),
        ("round.closed", None),
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
        ({"encryptionKey": "not base64!"}, 400, "invalid_public_key"),
        ({"encryptionKey": b64(bytes(32))}, 400, "invalid_public_key"),
        ({"encryptionKey": 5}, 400, "invalid_public_key"),
        ({"encryptionKey": None}, 400, "missing_field"),
        ({"publicKey": KEY, "encryptionKey": KEY}, 400, "invalid_public_key"),
        ({"minClients": 1}, 400, "threshold_too_low"),
        ({"totalClients": 4, "minClients": "2"}, 400, "threshold_too_low"),
        ({"minClients": 3}, 400, "invalid_min_clients"),
        ({"minClients": 0}, 400, "invalid_field"),
        ({"roundTimeout": 0}, 400, "invalid_field"),
        ({"roundTimeout": "60"}, 400, "invalid_field"),
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
    await refused(client, "POST", "/api/jobs/s3/keys", body, status, code)
    assert (await client.get("/api/jobs/s3")).status == 404


async def test_key_round_conflicts(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    declared = {"minClients": 2, "roundTimeout": 60}
    assert (await client.post("/api/jobs/s4/keys", json=key_body("a", 3, **declared))).status == 201
    before = await snapshot(client, "s4")
    cases = [
        (key_body("b", 4), "total_clients_mismatch"),
        (key_body("b", 3, schema=SCHEMA[:1]), "schema_mismatch"),
        (key_body("b", 3, maxRows=5), "max_rows_mismatch"),
        (key_body("b", 3, minClients=3), "min_clients_mismatch"),
        (key_body("b", 3, roundTimeout=61), "round_timeout_mismatch"),
        (key_body("b", 3, roundTimeout=60.5), "round_timeout_mismatch"),
    ]
    for body, code in cases:
        await refused(client, "POST", "/api/jobs/s4/keys", body, 409, code)
    assert await snapshot(client, "s4") == before
    # maxRows, minClients and roundTimeout are compared only when given: omitted, the job's stand.
    assert (await client.post("/api/jobs/s4/keys", json=key_body("b", 3))).status == 201
    assert (await client.post("/api/jobs/s4/keys", json=key_body("c", 3, schema=None, **declared))).status == 201
    before = await snapshot(client, "s4")
    await refused(client, "POST", "/api/jobs/s4/keys", key_body("d", 3), 409, "keys_complete")
    assert await snapshot(client, "s4") == before
    # A job that is not a secure-sum job has no key round.
    await client.post("/api/update", json={"jobId": "plain", "clientId": "a", "totalClients": 2})
    for schema in (None, SCHEMA):
        await refused(client, "POST", "/api/jobs/plain/keys", key_body("b", 2, schema=schema), 409, "not_secure_sum")
    await refused(client, "GET", "/api/jobs/plain/keys", None, 409, "not_secure_sum")
    assert (await client.get("/api/jobs/nothing/keys")).status == 404


async def test_vector_refusals_before_the_inputs_round_change_nothing(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    job = "s5"
    await register(client, job, 3, ["c0"])
    early = {"jobId": job, "clientId": "c0", "totalClients": 3, "vector": b64(bytes(8 * LAYOUT.length))}
    # Neither in the keys round nor in the shares round: inputs come after both.
    for round_ in ("keys", "shares"):
        assert (await keys_of(client, job))["round"] == round_
        before = await snapshot(client, job)
        for client_id in ("c0", "stranger"):
            await refused(client, "POST", "/api/update", {**early, "clientId": client_id}, 409, "round_not_open")
        assert await snapshot(client, job) == before
        if round_ == "keys":
            for client_id in ("c1", "c2"):
                await client.post(f"/api/jobs/{job}/keys", json=key_body(client_id, 3, schema=None))
    assert await client.app[VECTORS].stored_vector(job, "c0") is None

    # A vector for a job that takes none; a vector-less update of a job that needs one.
    await client.post("/api/update", json={"jobId": "plain", "clientId": "a", "totalClients": 2})
    plain = {"jobId": "plain", "clientId": "b", "totalClients": 2, "vector": b64(bytes(8))}
    await refused(client, "POST", "/api/update", plain, 400, "vector_not_expected")
    assert (await (await client.get("/api/jobs/plain")).json())["doneCount"] == 1
    # An octet-stream update of a job that does not exist: the key round must come first.
    resp = await client.post(
        "/api/update?jobId=ghost&clientId=a&totalClients=2&aggregation=secure-sum",
        data=bytes(16),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "keys_incomplete")
    assert (await client.get("/api/jobs/ghost")).status == 404


async def test_vector_refusals_in_and_after_the_inputs_round_change_nothing(make_client: Callable[..., Any]) -> None:
    """Five clients, k = 3: c4 registers and stops, c3 also posts its shares; c0-c2 send their inputs. The
    shares round is closed without c4, the inputs round without c3."""
    client = await make_client()
    job = "s5b"
    stops = {"c0": "inputs", "c1": "inputs", "c2": "inputs", "c3": "shares", "c4": "keys"}
    async with OrchestratorClient(url_of(client)) as orchestrator:
        runs = [
            asyncio.create_task(
                submit_statistics(orchestrator, job, c, 5, SCHEMA, ROWS[c], min_clients=3, stop_after=stop)
            )
            for c, stop in stops.items()
        ]

        async def four_shared() -> bool:
            rounds = await client.app[ROUNDS].rounds(job)
            return rounds is not None and len(rounds.sharers) == 4

        await until(four_shared)
        await orchestrator.close_job(job)
        await asyncio.gather(*runs)
        assert (await keys_of(client, job))["round"] == "inputs"
        vector = b64(bytes(8 * LAYOUT.length))
        body = {"jobId": job, "clientId": "c3", "totalClients": 5, "vector": vector}
        before = await snapshot(client, job)
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"vector": b64(bytes(8 * (LAYOUT.length - 1)))}, 400, "vector_length_mismatch"),
            ({"vector": b64(bytes(8 * LAYOUT.length + 3))}, 400, "invalid_vector"),
            ({"vector": "%%%"}, 400, "invalid_vector"),
            ({"vector": 17}, 400, "invalid_vector"),
            ({"vector": None}, 400, "vector_required"),
            ({"clientId": "stranger"}, 409, "not_a_participant"),
            ({"clientId": "c4"}, 409, "client_dropped"),  # registered, but posted no shares: not in U2
            ({"totalClients": 4}, 409, "total_clients_mismatch"),
        ]
        for change, status, code in cases:
            changed = {k: v for k, v in {**body, **change}.items() if v is not None}
            await refused(client, "POST", "/api/update", changed, status, code)
        assert await snapshot(client, job) == before
        # A counted client's second vector is a repeat: the first one stays.
        first = await client.app[VECTORS].stored_vector(job, "c0")
        repeat = await client.post("/api/update", json={**body, "clientId": "c0"})
        assert repeat.status == 200
        assert await snapshot(client, job) == before
        assert first is not None and first != bytes(8 * LAYOUT.length)

        await orchestrator.close_job(job)  # the inputs round closes without c3
        assert (await keys_of(client, job))["round"] == "unmask"
        before = await snapshot(client, job)
        for client_id in ("c3", "c4"):
            await refused(client, "POST", "/api/update", {**body, "clientId": client_id}, 409, "client_dropped")
        assert await snapshot(client, job) == before
    assert await client.app[VECTORS].stored_vector(job, "c3") is None
    dropped = (await (await client.get(f"/api/jobs/{job}")).json())["participation"]["dropped"]
    assert dropped == [{"clientId": "c3", "round": "inputs"}, {"clientId": "c4", "round": "shares"}]


async def test_shares_refusals_change_nothing(make_client: Callable[..., Any]) -> None:
    """Four clients, k = 3, keys and shares posted by hand (the service keeps bundles it cannot read)."""
    client = await make_client()
    job, members = "sh", ["c0", "c1", "c2", "c3"]
    path = f"/api/jobs/{job}/shares"
    await register(client, job, 4, members[:3], minClients=3)
    # The keys round is still open.
    before = await snapshot(client, job)
    await refused(client, "POST", path, shares_body("c0", members[:3]), 409, "round_not_open")
    await refused(client, "GET", f"{path}/c0", None, 409, "round_not_open")
    assert await snapshot(client, job) == before
    assert (await client.post(f"/api/jobs/{job}/keys", json=key_body("c3", 4, schema=None))).status == 201
    assert (await keys_of(client, job))["round"] == "shares"

    before = await snapshot(client, job)
    good = shares_body("c0", members)
    not_base64 = {**good, "shares": [*good["shares"][:3], {"to": "c3", "ciphertext": "%%%"}]}
    twice = {**good, "shares": [*good["shares"][:3], {**good["shares"][0]}]}
    cases: list[tuple[dict[str, Any], int, str]] = [
        (shares_body("stranger", members), 409, "not_a_participant"),
        (shares_body("c0", members[:3]), 400, "shares_incomplete"),  # missing c3
        (shares_body("c0", members[1:]), 400, "shares_incomplete"),  # missing itself
        (shares_body("c0", [*members[:3], "stranger"]), 400, "shares_incomplete"),
        (shares_body("c0", [*members, "stranger"]), 400, "shares_incomplete"),
        (shares_body("c0", []), 400, "shares_incomplete"),
        (twice, 400, "invalid_shares"),
        (not_base64, 400, "invalid_shares"),
        ({"clientId": "c0"}, 400, "missing_field"),
    ]
    for body, status, code in cases:
        await refused(client, "POST", path, body, status, code)
    await refused(client, "GET", f"{path}/c0", None, 409, "round_not_open")  # the round is open, not closed
    assert await snapshot(client, job) == before

    posted = await client.post(path, json=good)
    assert (posted.status, (await posted.json())["alreadyPosted"]) == (201, False)
    before = await snapshot(client, job)
    again = await client.post(path, json=good)
    assert (again.status, (await again.json())["alreadyPosted"]) == (200, True)
    await refused(client, "POST", path, shares_body("c0", members), 409, "shares_conflict")
    assert await snapshot(client, job) == before

    for sender in ("c1", "c2"):
        assert (await client.post(path, json=shares_body(sender, members))).status == 201
    await client.post(f"/api/jobs/{job}/close")  # the shares round closes without c3
    assert (await keys_of(client, job))["round"] == "inputs"
    before = await snapshot(client, job)
    await refused(client, "POST", path, shares_body("c3", members), 409, "client_dropped")
    await refused(client, "GET", f"{path}/c3", None, 409, "client_dropped")
    await refused(client, "POST", path, shares_body("c0", members), 409, "shares_conflict")
    again = await client.post(path, json=good)
    assert (again.status, (await again.json())["alreadyPosted"]) == (200, True)
    assert await snapshot(client, job) == before
    # Each sharer reads the bundles sealed for it, by the members of U2 only.
    inbox = await (await client.get(f"{path}/c0")).json()
    assert (inbox["round"], inbox["sharers"], inbox["participants"]) == ("inputs", members[:3], members)
    assert inbox["shares"] == [{"from": "c0", "ciphertext": good["shares"][0]["ciphertext"]}, *inbox["shares"][1:]]
    assert [s["from"] for s in inbox["shares"]] == members[:3]


async def test_unmask_refusals_change_nothing(make_client: Callable[..., Any]) -> None:
    """Four clients, k = 3, driven by the library: all post shares, c0-c2 send inputs, c3 stops there. The
    inputs round is closed without c3, whose mask key the unmask round then asks for."""
    client = await make_client()
    job = "um"
    path = f"/api/jobs/{job}/unmask"
    stops = {"c0": "inputs", "c1": "inputs", "c2": "inputs", "c3": "shares"}
    async with OrchestratorClient(url_of(client)) as orchestrator:
        await asyncio.gather(
            *(
                submit_statistics(orchestrator, job, c, 4, SCHEMA, ROWS[c], min_clients=3, stop_after=stop)
                for c, stop in stops.items()
            )
        )
        assert (await keys_of(client, job))["round"] == "inputs"
        before = await snapshot(client, job)
        await refused(client, "GET", path, None, 409, "round_not_open")
        await refused(client, "POST", path, unmask_body("c0", 1, ["c0", "c1", "c2"], []), 409, "round_not_open")
        assert await snapshot(client, job) == before
        await orchestrator.close_job(job)

    request = await (await client.get(path)).json()
    survivors, dropped = ["c0", "c1", "c2"], ["c3"]
    assert (request["round"], request["threshold"], request["survivors"], request["dropped"]) == (
        "unmask",
        3,
        survivors,
        dropped,
    )
    good = unmask_body("c0", 1, survivors, dropped)
    short_seed = {**good, "selfMaskShares": [{**good["selfMaskShares"][0], "value": b64(bytes(15))}]}
    long_seed = {**good, "selfMaskShares": [{**s, "value": b64(bytes(32))} for s in good["selfMaskShares"]]}
    short_key = {**good, "keyShares": [{**good["keyShares"][0], "value": b64(bytes(16))}]}
    not_base64 = {**good, "keyShares": [{**good["keyShares"][0], "value": "%%%"}]}
    named_twice = {**good, "keyShares": [*good["keyShares"], good["keyShares"][0]]}
    before = await snapshot(client, job)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (unmask_body("c3", 4, survivors, dropped), 409, "client_dropped"),  # sent no input
        (unmask_body("stranger", 1, survivors, dropped), 409, "client_dropped"),
        (unmask_body("c0", 1, survivors[:2], dropped), 400, "invalid_shares"),
        (unmask_body("c0", 1, [*survivors, "c3"], dropped), 400, "invalid_shares"),  # both shares of c3
        (unmask_body("c0", 1, survivors, []), 400, "invalid_shares"),
        (unmask_body("c0", 1, survivors, ["c3", "c2"]), 400, "invalid_shares"),  # both shares of c2
        (unmask_body("c0", 1, survivors, ["stranger"]), 400, "invalid_shares"),
        (unmask_body("c0", 2, survivors, dropped), 400, "invalid_shares"),  # c1's index, not c0's
        (short_seed, 400, "invalid_shares"),
        (long_seed, 400, "invalid_shares"),
        (short_key, 400, "invalid_shares"),
        (not_base64, 400, "invalid_shares"),
        (named_twice, 400, "invalid_shares"),
        ({"clientId": "c0", "selfMaskShares": good["selfMaskShares"]}, 400, "missing_field"),
    ]
    for body, status, code in cases:
        await refused(client, "POST", path, body, status, code)
    assert await snapshot(client, job) == before

    posted = await client.post(path, json=good)
    assert (posted.status, (await posted.json())["alreadyPosted"]) == (201, False)
    before = await snapshot(client, job)
    again = await client.post(path, json=good)
    assert (again.status, (await again.json())["alreadyPosted"]) == (200, True)
    await refused(client, "POST", path, unmask_body("c0", 1, survivors, dropped), 409, "unmask_conflict")
    assert await snapshot(client, job) == before
    assert (await (await client.get(path)).json())["answered"] == ["c0"]


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("shares", {"clientId": "c0", "shares": [{"to": "c1", "ciphertext": "A" * 2000}]}),
        ("shares", {"clientId": "c0", "shares": [{"ciphertext": "AAAA"}]}),
        ("shares", {"clientId": "c0", "shares": 5}),
        ("unmask", {"clientId": "c0", "selfMaskShares": [{"of": "c0", "index": 0, "value": "AAAA"}], "keyShares": []}),
        ("unmask", {"clientId": "c0", "selfMaskShares": [], "keyShares": [{"of": "c1", "index": 1}]}),
        ("unmask", {"clientId": "c0", "selfMaskShares": "none", "keyShares": []}),
    ],
)
async def test_malformed_share_entries_are_400(make_client: Callable[..., Any], endpoint: str, body: Any) -> None:
    """Entries the body model refuses (a 500 once: the refusal's message had braces str.format read)."""
    client = await make_client()
    await register(client, "bad", 2, ["c0", "c1"])
    before = await snapshot(client, "bad")
    await refused(client, "POST", f"/api/jobs/bad/{endpoint}", body, 400, "invalid_shares")
    assert await snapshot(client, "bad") == before


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


async def test_oversized_bodies_are_413(make_client: Callable[..., Any]) -> None:
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
    # The rounds' bodies are held to the vector's limit.
    many = [f"c{i}" for i in range(40)]
    assert (await client.post("/api/jobs/j/shares", json=shares_body("c0", many))).status == 413
    assert (await client.post("/api/jobs/j/unmask", json=unmask_body("c0", 1, many, many))).status == 413
    assert (await client.post("/api/jobs/j/keys", json=key_body("a", 2, note="x" * 5000))).status == 413
    assert (await client.get("/api/jobs/j")).status == 404


class RecordingClient(OrchestratorClient):
    """The library's HTTP client, keeping each masked vector it sends and what the service stored of it,
    read right after the service took it (the job's end deletes it)."""

    def __init__(self, url: str, vectors: VectorStore) -> None:
        super().__init__(url)
        self.vectors = vectors
        self.sent: dict[str, bytes] = {}
        self.stored: dict[str, bytes | None] = {}

    async def submit_vector(self, job_id: str, client_id: str, total_clients: int, vector: bytes) -> dict[str, Any]:
        assert await self.vectors.stored_vector(job_id, client_id) is None
        answer = await super().submit_vector(job_id, client_id, total_clients, vector)
        self.sent[client_id] = vector
        self.stored[client_id] = await self.vectors.stored_vector(job_id, client_id)
        return answer


def plain_vector(client_id: str) -> bytes:
    return local_statistics(SCHEMA, ROWS[client_id], 3, DEFAULT_MAX_ROWS).view("<u8").tobytes()


async def test_what_the_service_stores_is_not_the_clients_vector(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1)
    job, members = "s6", ["c0", "c1", "c2"]
    recorder = RecordingClient(url_of(client), client.app[VECTORS])
    async with recorder:
        await asyncio.gather(*(submit_statistics(recorder, job, c, 3, SCHEMA, ROWS[c]) for c in members))
        final = await recorder.wait_for_completion(job, timeout=20)
    assert final["status"] == "COMPLETED", final
    assert recorder.stored == recorder.sent  # it keeps exactly what the client sent...
    for c in members:  # ...which is not the client's statistics
        assert recorder.sent[c] != plain_vector(c)
    # Nor is the sum of what it stores the clients' total: the self masks hide it until the unmask round.
    stored_total = np.sum([np.frombuffer(recorder.sent[c], dtype="<u8") for c in members], axis=0, dtype="<u8")
    plain_total = np.sum([np.frombuffer(plain_vector(c), dtype="<u8") for c in members], axis=0, dtype="<u8")
    assert not np.array_equal(stored_total, plain_total)
    age, smoker, blood = final["aggregatedResults"]
    assert (age["count"], age["sum"], smoker["aggregatedTrue"], blood["categoryCounts"]) == (
        2,
        80.0,
        1,
        {"A": 1, "B": 0, "O": 1},
    )
    # Once the job is finished, nothing of the protocol is kept: vectors, shares, unmask answers.
    redis, k = client.app[STORE].redis, client.app[STORE].keys
    assert await redis.exists(*k.protocol_keys(job)) == 0


async def test_a_rerun_of_a_job_id_with_the_same_keys_repeats_no_mask(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """A jobId used again after its job expired, by clients that kept their keys and self-mask seeds: the
    new instance gets another instanceId, every stored vector differs from the first run's (so their
    difference tells the service nothing), and the results still differ by exactly the one client's change."""
    client = await make_client(aggregation_workers=1)
    job = "s7"  # the same job id, keys and seeds in both runs
    secrets = {c: (generate_private_key(), generate_private_key(), self_mask_seed()) for c in ("c0", "c1", "c2")}
    rows: dict[str, list[dict[str, Any]]] = {
        "c0": [{"age": 30, "smoker": True, "blood": "A"}],
        "c1": [{"age": 50.5}],
        "c2": [{"blood": "O", "smoker": False}],
    }
    runs: list[tuple[str, dict[str, bytes], list[dict[str, Any]]]] = []
    for run, age in enumerate([30, 70]):
        if run:  # start the job afresh (it completed: expire it at once)
            assert await client.app[STORE].expire_stale(now=10**15) == ([job], False)
        rows["c0"][0]["age"] = age
        files = {
            c: KeyFile(tmp_path / f"{run}-{c}.json", job, mask, encryption_key=encryption, seed=seed)
            for c, (mask, encryption, seed) in secrets.items()
        }
        recorder = RecordingClient(url_of(client), client.app[VECTORS])
        async with recorder:
            await asyncio.gather(
                *(submit_statistics(recorder, job, c, 3, SCHEMA, rows[c], key_file=files[c]) for c in secrets)
            )
            final = await recorder.wait_for_completion(job, timeout=20)
        assert final["status"] == "COMPLETED", final
        instance = final["instanceId"]
        assert {f.instance_id for f in files.values()} == {instance}
        runs.append((instance, dict(recorder.sent), final["aggregatedResults"]))
    (instance1, first, result1), (instance2, second, result2) = runs
    assert instance1 != instance2
    assert all(first[c] != second[c] for c in secrets)
    assert (result1[0]["sum"], result2[0]["sum"]) == (80.5, 120.5)
    assert result1[1:] == result2[1:]


async def test_client_library_refuses_overflow_and_bad_rows_before_sending(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    wide: list[dict[str, Any]] = [{"name": "x", "dataType": "NUMERIC", "bounds": [-1e7, 1e7], "scale": 2}]
    async with OrchestratorClient(url_of(client)) as orchestrator:
        with pytest.raises(OverflowRisk, match="rows per client fit"):
            await submit_statistics(orchestrator, "s8", "a", 10, wide, [{"x": 1}])
        with pytest.raises(RowError, match="outside the declared bounds"):
            await submit_statistics(orchestrator, "s8", "a", 2, SCHEMA, [{"age": 500}])
    assert (await client.get("/api/jobs/s8")).status == 404


async def test_sum_backend_takes_plain_vectors(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1)
    async with OrchestratorClient(url_of(client)) as orchestrator:
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
    mismatch = {**big_rows, "clientId": "c", "vector": vector, "maxRows": 11}
    await refused(client, "POST", "/api/update", mismatch, 409, "max_rows_mismatch")
    # The sum job refuses a vector-less update and one created without a schema.
    vectorless = {"jobId": "s10", "clientId": "a", "totalClients": 2, "aggregation": "sum"}
    await refused(client, "POST", "/api/update", vectorless, 400, "schema_required")
    np.testing.assert_array_equal(LAYOUT.encode([]), np.zeros(LAYOUT.length, dtype=np.int64))


async def test_sum_backend_by_configuration(make_client: Callable[..., Any]) -> None:
    """With AGGREGATION_BACKEND=sum, an update that names no backend creates a sum job."""
    client = await make_client(aggregation_backend="sum", aggregation_workers=1)
    for i in range(2):
        vector = LAYOUT.encode([{"age": 10 * (i + 1), "blood": "B"}]).view("<u8").tobytes()
        body = {"jobId": "cfg", "clientId": f"c{i}", "totalClients": 2, "schema": SCHEMA, "vector": b64(vector)}
        assert (await client.post("/api/update", json=body)).status == 200
    async with OrchestratorClient(url_of(client)) as orchestrator:
        final = await orchestrator.wait_for_completion("cfg", timeout=20)
    assert final["metadata"]["aggregation"] == "sum"
    assert final["aggregatedResults"][0]["sum"] == 30.0
    assert final["aggregatedResults"][2]["categoryCounts"] == {"A": 0, "B": 2, "O": 0}
