"""The OpenAPI document is valid, covers every route, and real responses match it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from orchestrator.openapi import OPENAPI
from tests.support import new_keys

Client = TestClient[Any, Any]


def assert_matches(path: str, method: str, status: int, body: Any) -> None:
    responses = OPENAPI["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} -> {status} is not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    resolver_doc = {**schema, "components": OPENAPI["components"]}
    OAS31Validator(resolver_doc).validate(body)


def test_document_is_valid_openapi() -> None:
    validate(OPENAPI)


async def test_every_route_is_documented(client: Client) -> None:
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD" and route.resource.name != "static"
    }
    documented = {(path, method) for path, item in OPENAPI["paths"].items() for method in item}
    assert routes == documented


async def test_responses_match_the_document(client: Client) -> None:
    served = await (await client.get("/api/openapi.json")).json()
    assert served == OPENAPI
    schema = [
        {"featureName": "a", "dataType": "BOOLEAN", "offset": 0, "length": 2, "fields": ["numOfNotNull", "numOfTrue"]}
    ]
    calls: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("/", "get", "/", None),
        ("/api/update", "post", "/api/update", {"jobId": "o1", "clientId": "c1", "totalClients": 2, "schema": schema}),
        ("/api/update", "post", "/api/update", {"jobId": "o1", "clientId": "c1", "totalClients": 2}),
        ("/api/update", "post", "/api/update", {"jobId": "o1", "clientId": "c2", "totalClients": 9}),
        ("/api/update", "post", "/api/update", {"jobId": "o1", "clientId": 5, "totalClients": 2}),
        ("/api/job-status/{jobId}", "get", "/api/job-status/o1", None),
        ("/api/job-status/{jobId}", "get", "/api/job-status/none", None),
        ("/api/jobs", "get", "/api/jobs?limit=1", None),
        ("/api/jobs", "get", "/api/jobs?limit=0", None),
        ("/api/jobs/{jobId}", "get", "/api/jobs/o1", None),
        ("/api/jobs/{jobId}", "get", "/api/jobs/none", None),
        ("/api/jobs/{jobId}", "get", "/api/jobs/bad%20id", None),
        ("/api/jobs/{jobId}/cancel", "post", "/api/jobs/none/cancel", None),
        ("/api/jobs/{jobId}/cancel", "post", "/api/jobs/o1/cancel", {"reason": 7}),
        ("/healthz", "get", "/healthz", None),
        ("/readyz", "get", "/readyz", None),
    ]
    for path, method, url, body in calls:
        resp = await client.request(method.upper(), url, json=body)
        assert_matches(path, method, resp.status, await resp.json())
    await client.post("/api/update", json={"jobId": "o1", "clientId": "c2", "totalClients": 2})
    resp = await client.get("/api/job-status/o1")
    assert_matches("/api/job-status/{jobId}", "get", resp.status, await resp.json())
    resp = await client.post("/api/jobs/o1/cancel")
    assert_matches("/api/jobs/{jobId}/cancel", "post", resp.status, await resp.json())
    resp = await client.post("/api/jobs/o1/cancel")
    assert_matches("/api/jobs/{jobId}/cancel", "post", resp.status, await resp.json())
    resp = await client.get("/api/job-status/o1")
    assert_matches("/api/job-status/{jobId}", "get", resp.status, await resp.json())


async def test_key_round_responses_match_the_document(client: Client) -> None:
    from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes

    schema = [{"name": "age", "dataType": "NUMERIC", "bounds": [0, 120]}]
    key = encode_key(public_key_bytes(generate_private_key()))
    body = {
        "clientId": "a",
        "totalClients": 2,
        "publicKey": key,
        "encryptionKey": new_keys()["encryptionKey"],
        "schema": schema,
    }
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("post", "/api/jobs/k1/keys", body),
        ("post", "/api/jobs/k1/keys", body),
        ("post", "/api/jobs/k1/keys", {**body, "publicKey": "x"}),
        ("post", "/api/jobs/k1/keys", {**body, "totalClients": 3}),
        ("get", "/api/jobs/k1/keys", None),
        ("get", "/api/jobs/none/keys", None),
        ("get", "/api/jobs/o1/keys", None),
    ]
    await client.post("/api/update", json={"jobId": "o1", "clientId": "c1", "totalClients": 2})
    statuses = set()
    for method, url, payload in calls:
        resp = await client.request(method.upper(), url, json=payload)
        statuses.add(resp.status)
        assert_matches("/api/jobs/{jobId}/keys", method, resp.status, await resp.json())
    assert statuses == {200, 201, 400, 404, 409}
    masked = {"jobId": "k1", "clientId": "a", "totalClients": 2, "vector": "A" * 32}  # 24 zero bytes
    resp = await client.post("/api/update", json=masked)
    assert resp.status == 409
    assert_matches("/api/update", "post", resp.status, await resp.json())
