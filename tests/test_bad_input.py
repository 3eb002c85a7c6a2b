"""Bad input of every kind: a clear 4xx JSON error, never a 500, and nothing stored changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Client = TestClient[Any, Any]
GOOD = {"jobId": "job-1", "clientId": "client-1", "totalClients": 2}


def body(**changes: Any) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


CASES: list[tuple[str, bytes, str, int, str]] = [
    # (case, body, content type, status, error code)
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("malformed json", b'{"jobId": ', "application/json", 400, "invalid_json"),
    ("not utf-8", b'{"jobId": "\xff"}', "application/json", 400, "invalid_json"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    ("array body", b"[1, 2]", "application/json", 400, "invalid_body"),
    ("string body", b'"hello"', "application/json", 400, "invalid_body"),
    ("null body", b"null", "application/json", 400, "invalid_body"),
    ("form content type", b"jobId=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("text content type", body(), "text/plain", 415, "unsupported_media_type"),
    ("missing jobId", body(jobId=...), "application/json", 400, "missing_field"),
    ("missing clientId", body(clientId=...), "application/json", 400, "missing_field"),
    ("missing totalClients", body(totalClients=...), "application/json", 400, "missing_field"),
    ("null jobId", body(jobId=None), "application/json", 400, "missing_field"),
    ("numeric jobId", body(jobId=123), "application/json", 400, "invalid_field"),
    ("empty jobId", body(jobId=""), "application/json", 400, "invalid_field"),
    ("jobId with braces", body(jobId="a{b}"), "application/json", 400, "invalid_field"),
    ("jobId with slash", body(jobId="../etc/passwd"), "application/json", 400, "invalid_field"),
    ("jobId too long", body(jobId="a" * 129), "application/json", 400, "invalid_field"),
    ("clientId with space", body(clientId="client 1"), "application/json", 400, "invalid_field"),
    ("clientId unicode", body(clientId="clïent"), "application/json", 400, "invalid_field"),
    ("totalClients zero", body(totalClients=0), "application/json", 400, "invalid_field"),
    ("totalClients negative", body(totalClients=-3), "application/json", 400, "invalid_field"),
    ("totalClients too big", body(totalClients=100_001), "application/json", 400, "invalid_field"),
    ("totalClients float", body(totalClients=2.5), "application/json", 400, "invalid_field"),
    ("totalClients bool", body(totalClients=True), "application/json", 400, "invalid_field"),
    ("totalClients word", body(totalClients="three"), "application/json", 400, "invalid_field"),
    (
        "totalClients huge",
        b'{"jobId": "j", "clientId": "c", "totalClients": 1e400}',
        "application/json",
        400,
        "invalid_json",  # beyond a double: refused as it is read, never stored as Infinity
    ),
    (
        "totalClients NaN",
        b'{"jobId": "j", "clientId": "c", "totalClients": NaN}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "NaN hidden in the schema",
        b'{"jobId": "j", "clientId": "c", "totalClients": 2, "schema": [{"name": "x", "dataType": "NUMERIC", '
        b'"e": NaN}]}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "Infinity",
        b'{"jobId": "j", "clientId": "c", "totalClients": 2, "schema": [{"name": "x", "dataType": "BOOLEAN", '
        b'"n": -Infinity}]}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "lone surrogate in the schema",
        b'{"jobId": "j", "clientId": "c", "totalClients": 2, "schema": [{"name": "\\ud800", "dataType": "NUMERIC"}]}',
        "application/json",
        400,
        "invalid_field",
    ),
    ("schema not a list", body(schema={"name": "age"}), "application/json", 400, "invalid_schema"),
    ("schema item not object", body(schema=["age"]), "application/json", 400, "invalid_schema"),
    ("schema item without name", body(schema=[{"dataType": "NUMERIC"}]), "application/json", 400, "invalid_schema"),
    (
        "schema name not string",
        body(schema=[{"name": 5, "dataType": "NUMERIC"}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema unknown type",
        body(schema=[{"name": "a", "dataType": "TEXT"}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    ("schema missing type", body(schema=[{"name": "a"}]), "application/json", 400, "invalid_schema"),
    (
        "schema duplicate names",
        body(schema=[{"name": "a", "dataType": "NUMERIC"}, {"name": "a", "dataType": "BOOLEAN"}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema negative offset",
        body(schema=[{"name": "a", "dataType": "NUMERIC", "offset": -1, "length": 2}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema offset without length",
        body(schema=[{"name": "a", "dataType": "NUMERIC", "offset": 0}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema overlapping spans",
        body(
            schema=[
                {"name": "a", "dataType": "NUMERIC", "offset": 0, "length": 7},
                {"name": "b", "dataType": "BOOLEAN", "offset": 6, "length": 2},
            ]
        ),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema fields not strings",
        body(schema=[{"name": "a", "dataType": "BOOLEAN", "fields": [1, 2]}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema fields disagree with length",
        body(schema=[{"name": "a", "dataType": "BOOLEAN", "offset": 0, "length": 2, "fields": ["n"]}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema describing a huge vector",
        body(schema=[{"name": "a", "dataType": "NUMERIC", "offset": 0, "length": 10**9}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "schema too many features",
        body(schema=[{"name": f"f{i}", "dataType": "BOOLEAN"} for i in range(10_001)]),
        "application/json",
        400,
        "invalid_schema",
    ),
    # Found by an adversarial run (#8): 500s, non-finite numbers, ids a URL cannot carry, wrong counts.
    ("deadline a 400-digit integer", body(deadline=10**400), "application/json", 400, "invalid_field"),
    (
        "deadline 1e400",
        b'{"jobId": "j", "clientId": "c", "totalClients": 2, "deadline": 1e400}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "deadline at year 1 east of UTC",
        body(deadline="0001-01-01T00:00:00+05:00"),
        "application/json",
        400,
        "invalid_field",
    ),
    ("aggregation a list", body(aggregation=["sum"]), "application/json", 400, "invalid_field"),
    ("aggregation an object", body(aggregation={"a": 1}), "application/json", 400, "invalid_field"),
    (
        "dataType a list",
        body(schema=[{"name": "a", "dataType": ["NUMERIC"]}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    ("dataType an object", body(schema=[{"name": "a", "dataType": {}}]), "application/json", 400, "invalid_schema"),
    (
        "bounds 1e400",
        b'{"jobId": "j", "clientId": "c", "totalClients": 2, "schema": [{"name": "a", "dataType": '
        b'"NUMERIC", "bounds": [0, 1e400]}]}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "bounds reversed",
        body(schema=[{"name": "a", "dataType": "NUMERIC", "bounds": [5, 1]}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    ("jobId .", body(jobId="."), "application/json", 400, "invalid_id"),
    ("jobId ..", body(jobId=".."), "application/json", 400, "invalid_id"),
    ("clientId ..", body(clientId=".."), "application/json", 400, "invalid_id"),
    (
        "categories with a length that leaves out numOfNotNull",
        body(schema=[{"name": "a", "dataType": "NOMINAL", "categories": ["A", "B", "C"], "offset": 0, "length": 3}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "categories with fields that name other things",
        body(
            schema=[
                {
                    "name": "a",
                    "dataType": "NOMINAL",
                    "categories": ["A", "B"],
                    "offset": 0,
                    "length": 3,
                    "fields": ["numOfNotNull", "x", "y"],
                }
            ]
        ),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "categories with the real clients' 1-field layout",
        body(
            schema=[
                {
                    "name": "a",
                    "dataType": "NOMINAL",
                    "categories": ["A"],
                    "offset": 0,
                    "length": 1,
                    "fields": ["numOfNotNull"],
                }
            ]
        ),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "categories on a BOOLEAN",
        body(schema=[{"name": "a", "dataType": "BOOLEAN", "categories": ["A"]}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "categories repeated",
        body(schema=[{"name": "a", "dataType": "NOMINAL", "categories": ["A", "A"]}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "categories empty",
        body(schema=[{"name": "a", "dataType": "NOMINAL", "categories": []}]),
        "application/json",
        400,
        "invalid_schema",
    ),
    (
        "fields repeated",
        body(
            schema=[
                {"name": "a", "dataType": "BOOLEAN", "offset": 0, "length": 2, "fields": ["numOfTrue", "numOfTrue"]}
            ]
        ),
        "application/json",
        400,
        "invalid_schema",
    ),
]


@pytest.mark.parametrize(("case", "raw", "content_type", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_update_is_clear_4xx(
    client: Client, case: str, raw: bytes, content_type: str, status: int, code: str
) -> None:
    resp = await client.post("/api/update", data=raw, headers={"Content-Type": content_type})
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    error = (await resp.json())["error"]
    assert error["code"] == code
    assert error["message"]
    # Nothing was stored.
    listing = await (await client.get("/api/jobs")).json()
    assert listing["jobs"] == []


async def test_bad_input_never_touches_an_existing_job(client: Client) -> None:
    await client.post("/api/update", json={**GOOD, "schema": [{"name": "a", "dataType": "BOOLEAN"}]})
    before = await (await client.get("/api/jobs/job-1")).json()
    for _, raw, content_type, _, _ in CASES:
        await client.post("/api/update", data=raw, headers={"Content-Type": content_type})
    assert await (await client.get("/api/jobs/job-1")).json() == before


async def test_oversized_body_is_413(make_client: Any) -> None:
    client = await make_client(max_body_bytes=4096)
    resp = await client.post(
        "/api/update", data=b'{"jobId": "' + b"a" * 5000 + b'"}', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_numeric_string_total_is_accepted(client: Client) -> None:
    resp = await client.post("/api/update", json={**GOOD, "totalClients": "2"})
    assert resp.status == 200
    assert (await resp.json())["totalClients"] == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
ids = st.one_of(st.sampled_from(["job-1", "client-1", "a", "x" * 128]), st.text(max_size=140), st.integers(), st.none())
features = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=8), st.integers()),
        "featureName": st.text(max_size=8),
        "dataType": st.sampled_from(["BOOLEAN", "NUMERIC", "NOMINAL", "TEXT", 3]),
        "offset": st.one_of(st.integers(-2, 20), st.floats(), st.text(max_size=2)),
        "length": st.one_of(st.integers(-2, 20), st.none()),
        "fields": st.one_of(st.lists(st.text(max_size=4), max_size=8), json_values),
    },
)
update_like = st.fixed_dictionaries(
    {},
    optional={
        "jobId": ids,
        "clientId": ids,
        "totalClients": st.one_of(st.integers(-5, 200_000), st.text(max_size=8), json_values),
        "schema": st.one_of(st.lists(features, max_size=6), json_values),
        "extra": json_values,
    },
)


async def test_random_bodies_never_500(client: Client) -> None:
    bodies: list[bytes] = []

    @settings(max_examples=400, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.one_of(
            update_like.map(lambda d: json.dumps(d).encode()),
            json_values.map(lambda d: json.dumps(d).encode()),
            st.binary(max_size=64),
        )
    )
    def collect(raw: bytes) -> None:
        bodies.append(raw)

    collect()
    for raw in bodies:
        resp = await client.post("/api/update", data=raw, headers={"Content-Type": "application/json"})
        assert resp.status < 500, (raw, await resp.text())
        assert resp.content_type == "application/json"
        if resp.status >= 400:
            error = (await resp.json())["error"]
            assert error["code"] and error["message"]
