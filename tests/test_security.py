"""Authentication, roles, hostile tokens, the audit trail, WebSocket tickets, headers and CORS, on
fakeredis and the real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes
from orchestrator.security.guard import CONTENT_SECURITY_POLICY
from orchestrator.security.tokens import issue_token
from orchestrator.typedefs import STORE
from tests.support import new_keys

Client = TestClient[Any, Any]
SECRET = "s3cret-for-tests-only-0123456789abcdef"
SCHEMA = [{"name": "age", "dataType": "NUMERIC", "bounds": [0, 120]}]


def only_encryption() -> dict[str, str]:
    return {"encryptionKey": new_keys()["encryptionKey"]}


def token(role: str, sub: str = "someone", jobs: list[str] | None = None, ttl: float = 600) -> str:
    if role == "client" and jobs is None:
        jobs = ["*"]  # client tokens must name the jobs they may join
    return issue_token(SECRET, sub, role, ttl, jobs)


def bearer(value: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"} if value else {}


@pytest.fixture
async def secured(make_client: Callable[..., Any]) -> Client:
    client: Client = await make_client(auth_jwt_secret=SECRET)
    # A job c1 takes part in (reported), and a secure-sum job c1 has a key in.
    admin = bearer(token("admin", "root"))
    body = {"jobId": "j1", "clientId": "c1", "totalClients": 3}
    assert (await client.post("/api/update", json=body, headers=bearer(token("client", "c1")))).status == 200
    await client.post("/api/update", json={**body, "jobId": "other", "clientId": "c2"}, headers=admin)
    key = encode_key(public_key_bytes(generate_private_key()))
    keys = {"clientId": "c1", "totalClients": 2, "publicKey": key, **only_encryption(), "schema": SCHEMA}
    assert (await client.post("/api/jobs/ss/keys", json=keys, headers=bearer(token("client", "c1")))).status == 201
    return client


def update_body(client_id: str = "c1", job: str = "j1") -> dict[str, Any]:
    return {"jobId": job, "clientId": client_id, "totalClients": 3}


def key_body(client_id: str) -> dict[str, Any]:
    return {"clientId": client_id, "totalClients": 2, **new_keys()}


# (method, url, body, {role: expected status}); role None: no token. Client tokens are for c1.
MATRIX: list[tuple[str, str, Any, dict[str | None, int]]] = [
    ("GET", "/", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/healthz", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/readyz", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/api/openapi.json", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/api/whoami", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/dashboard", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/static/app.js", None, {None: 200, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/metrics", None, {None: 401, "client": 403, "viewer": 200, "admin": 200}),
    ("POST", "/api/update", update_body("c1", "new-job"), {None: 401, "client": 200, "viewer": 403, "admin": 200}),
    ("POST", "/api/jobs/ss/keys", key_body("c1"), {None: 401, "client": 200, "viewer": 403, "admin": 200}),
    ("GET", "/api/jobs/ss/keys", None, {None: 401, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/api/job-status/j1", None, {None: 401, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/api/job-status/other", None, {None: 401, "client": 403, "viewer": 200, "admin": 200}),
    ("GET", "/api/jobs/j1", None, {None: 401, "client": 200, "viewer": 200, "admin": 200}),
    ("GET", "/api/jobs/other", None, {None: 401, "client": 403, "viewer": 200, "admin": 200}),
    ("GET", "/api/jobs", None, {None: 401, "client": 403, "viewer": 200, "admin": 200}),
    ("POST", "/api/ws-ticket", None, {None: 401, "client": 201, "viewer": 201, "admin": 201}),
    ("GET", "/api/audit", None, {None: 401, "client": 403, "viewer": 403, "admin": 200}),
    ("POST", "/api/jobs/j1/deliveries/retry", None, {None: 401, "client": 403, "viewer": 403, "admin": 409}),
    ("POST", "/api/jobs/other/cancel", None, {None: 401, "client": 403, "viewer": 403, "admin": 200}),
    # The coordinator needs no bearer token: its per-job callback token is checked once the job aggregates.
    ("POST", "/api/smpc/callback/j1?token=x", {"status": "COMPLETED"}, {None: 409}),
    ("GET", "/ws", None, {None: 401, "client": 403}),
    ("GET", "/ws/jobs/other", None, {None: 401, "client": 403}),
    # HEAD is GET's twin in aiohttp: it takes GET's roles.
    ("HEAD", "/api/jobs/j1", None, {None: 401, "client": 200, "viewer": 200}),
    ("HEAD", "/api/jobs", None, {None: 401, "client": 403, "viewer": 200}),
    ("HEAD", "/api/audit", None, {None: 401, "viewer": 403, "admin": 200}),
    ("HEAD", "/metrics", None, {None: 401, "client": 403, "viewer": 200}),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), MATRIX, ids=[f"{m} {u}" for m, u, _, _ in MATRIX])
async def test_each_role_on_each_endpoint(
    secured: Client, method: str, url: str, body: Any, expected: dict[str | None, int]
) -> None:
    for role, status in expected.items():
        headers = bearer(token(role, "c1") if role == "client" else token(role) if role else None)
        resp = await secured.request(method, url, json=body, headers=headers)
        assert resp.status == status, f"{role}: {resp.status} {await resp.text()}"
        if status in (401, 403) and method != "HEAD":
            error = (await resp.json())["error"]
            assert error["code"] and error["message"]
        if status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_websockets_with_roles_and_tickets(secured: Client) -> None:
    base = str(secured.make_url("")).rstrip("/").replace("http://", "ws://")
    async with aiohttp.ClientSession() as session:
        # A client follows its own job (Authorization header: no browser), not another's, and not /ws.
        async with session.ws_connect(f"{base}/ws/jobs/j1", headers=bearer(token("client", "c1"))) as ws:
            assert (await ws.receive_json())["type"] == "snapshot"
        # A browser: trades its token for a ticket, once.
        resp = await secured.post("/api/ws-ticket", headers=bearer(token("viewer", "v")))
        ticket = (await resp.json())["ticket"]
        async with session.ws_connect(f"{base}/ws?ticket={ticket}") as ws:
            assert (await ws.receive_json())["type"] == "snapshot"
        with pytest.raises(aiohttp.WSServerHandshakeError) as used:
            async with session.ws_connect(f"{base}/ws?ticket={ticket}"):
                pass
        assert used.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as none:
            async with session.ws_connect(f"{base}/ws"):
                pass
        assert none.value.status == 401
        # A viewer limited to some jobs sees only those in the /ws snapshot.
        async with session.ws_connect(f"{base}/ws", headers=bearer(token("viewer", "v2", jobs=["j*"]))) as ws:
            snapshot = await ws.receive_json()
        assert [job["jobId"] for job in snapshot["jobs"]] == ["j1"]


async def test_impersonation_is_refused_and_changes_nothing(secured: Client) -> None:
    client_c1 = bearer(token("client", "c1"))
    resp = await secured.post("/api/update", json=update_body("c2"), headers=client_c1)
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "client_mismatch")
    resp = await secured.post("/api/jobs/ss/keys", json=key_body("c2"), headers=client_c1)
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "client_mismatch")
    job = await (await secured.get("/api/jobs/j1", headers=bearer(token("admin")))).json()
    assert [c["clientId"] for c in job["clients"]] == ["c1"]
    keys = await (await secured.get("/api/jobs/ss/keys", headers=bearer(token("admin")))).json()
    assert [k["clientId"] for k in keys["keys"]] == ["c1"]


def hs256_by_hand(claims: dict[str, Any], secret: bytes) -> str:
    """What an attacker would send: an HS256 token keyed with the service's public key (PyJWT refuses to
    make one, so it is made by hand here)."""
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signature = jwt.utils.base64url_encode(hmac.new(secret, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def rsa_pem() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem.decode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: issue_token("another-secret-of-at-least-32-bytes!!", "c1", "client", 600), "bad signature"),
        (
            lambda: jwt.encode({"sub": "c1", "role": "admin", "exp": time.time() + 600}, "", algorithm="none"),
            "'none'",
        ),
        (lambda: token("admin", ttl=600)[:-4] + "AAAA", "signature"),
        (
            lambda: jwt.encode({"sub": "c1", "role": "admin", "exp": time.time() - 120}, SECRET, algorithm="HS256"),
            "expired",
        ),
        (
            lambda: jwt.encode({"sub": "c1", "role": "root", "exp": time.time() + 600}, SECRET, algorithm="HS256"),
            "role",
        ),
        (lambda: jwt.encode({"sub": "c1", "role": "admin"}, SECRET, algorithm="HS256"), "exp"),
        (
            lambda: jwt.encode({"sub": "a b", "role": "admin", "exp": time.time() + 600}, SECRET, algorithm="HS256"),
            "sub",
        ),
        (lambda: "not-a-jwt", "malformed"),
    ],
)
async def test_hostile_tokens_are_refused(secured: Client, make: Callable[[], str], reason: str) -> None:
    value = make()
    resp = await secured.get("/api/jobs", headers=bearer(value))
    body = await resp.json()
    assert resp.status == 401, body
    assert reason in body["error"]["message"]
    assert value not in body["error"]["message"]


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", lambda: str(int(time.time()) + 600)),  # PyJWT takes a numeric string
        ("exp", lambda: 10**400),  # too large for a float
        ("exp", lambda: time.time() + 1e13),
        ("nbf", lambda: "0"),
        ("iat", lambda: True),
    ],
    ids=["exp-string", "exp-huge-int", "exp-far", "nbf-string", "iat-bool"],
)
async def test_time_claims_must_be_numbers(secured: Client, claim: str, value: Callable[[], Any]) -> None:
    # A token whose exp the service cannot read as a time would open a socket that never closes.
    claims = {"sub": "v", "role": "viewer", "exp": int(time.time()) + 600, claim: value()}
    value_token = jwt.encode(claims, SECRET, algorithm="HS256")
    resp = await secured.get("/api/jobs", headers=bearer(value_token))
    body = await resp.json()
    assert resp.status == 401, body
    assert f"the '{claim}' claim must be a number" in body["error"]["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await secured.ws_connect("/ws", headers=bearer(value_token))
    assert refused.value.status == 401


async def test_a_token_for_other_jobs_is_refused(secured: Client) -> None:
    limited = bearer(token("client", "c1", jobs=["study-*"]))
    for method, url, body in [
        ("POST", "/api/update", update_body("c1", "j1")),
        ("GET", "/api/job-status/j1", None),
        ("GET", "/api/jobs/ss/keys", None),
    ]:
        resp = await secured.request(method, url, json=body, headers=limited)
        assert (resp.status, (await resp.json())["error"]["code"]) == (403, "job_not_allowed")
    resp = await secured.post("/api/update", json=update_body("c1", "study-9"), headers=limited)
    assert resp.status == 200
    viewer = bearer(token("viewer", "v", jobs=["study-*"]))
    assert (await secured.get("/api/jobs/j1", headers=viewer)).status == 403
    assert (await secured.get("/api/jobs/study-9", headers=viewer)).status == 200


async def test_public_key_algorithms_and_no_confusion(make_client: Callable[..., Any], tmp_path: Path) -> None:
    private, pem = rsa_pem()
    client: Client = await make_client(auth_jwt_public_key=pem)
    claims = {"sub": "v", "role": "viewer", "exp": int(time.time()) + 600}
    good = jwt.encode(claims, private, algorithm="RS256")
    assert (await client.get("/api/jobs", headers=bearer(good))).status == 200
    # HS256 "signed" with the public key (the classic confusion): refused, HS256 is not configured.
    forged = hs256_by_hand(claims, pem.encode())
    resp = await client.get("/api/jobs", headers=bearer(forged))
    assert resp.status == 401
    assert "not accepted" in (await resp.json())["error"]["message"]
    # Another RSA key: bad signature.
    other, _ = rsa_pem()
    resp = await client.get("/api/jobs", headers=bearer(jwt.encode(claims, other, algorithm="RS256")))
    assert resp.status == 401
    # ES256 with an EC key.
    ec_private = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ec_client: Client = await make_client(auth_jwt_public_key=ec_pem.decode())
    assert (
        await ec_client.get("/api/jobs", headers=bearer(jwt.encode(claims, ec_private, algorithm="ES256")))
    ).status == 200
    assert (await ec_client.get("/api/jobs", headers=bearer(good))).status == 401


async def test_audit_trail_records_every_write(secured: Client) -> None:
    admin = bearer(token("admin", "root"))
    await secured.post("/api/update", json=update_body("c2"), headers=bearer(token("client", "c1")))  # 403
    await secured.post("/api/update", json=update_body("c1"), headers=bearer(token("client", "c1")))  # duplicate
    await secured.post("/api/jobs/other/cancel", headers=admin)
    await secured.post("/api/jobs/other/cancel", headers=bearer("forged"))
    # The forged attempt is logged, not stored (see test_refused_writes_are_limited_...).
    page = await (await secured.get("/api/audit?limit=3", headers=admin)).json()
    entries = page["entries"]
    assert [(e["who"], e.get("role"), e["action"], e.get("status", ""), e.get("outcome", "")) for e in entries] == [
        ("root", "admin", "POST /api/jobs/other/cancel", "200", ""),
        ("c1", "client", "POST /api/update", "", "duplicate"),
        ("c1", "client", "POST /api/update", "403", ""),
    ]
    assert all(e["ip"] == "127.0.0.1" and e["job"] for e in entries)
    older = await (await secured.get(f"/api/audit?limit=100&before={page['nextCursor']}", headers=admin)).json()
    assert [e["action"] for e in older["entries"]][-1] == "POST /api/update"  # the fixture's first write
    assert (await secured.get("/api/audit?before=nope", headers=admin)).status == 400


async def test_security_headers_on_every_response(secured: Client) -> None:
    for url in ["/", "/dashboard", "/static/app.js", "/api/jobs", "/nowhere", "/api/openapi.json"]:
        resp = await secured.get(url)
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_is_off_by_default_and_follows_the_allow_list(make_client: Callable[..., Any]) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    closed: Client = await make_client()
    assert (await closed.options("/api/update", headers=preflight)).status == 403
    opened: Client = await make_client(cors_allowed_origins=("https://app.example",))
    resp = await opened.options("/api/update", headers=preflight)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    resp = await opened.get("/api/jobs", headers={"Origin": "https://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp = await opened.get("/api/jobs", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_whoami(secured: Client) -> None:
    assert await (await secured.get("/api/whoami")).json() == {"authRequired": True, "authenticated": False}
    me = await (await secured.get("/api/whoami", headers=bearer(token("viewer", "ana", jobs=["x*"])))).json()
    assert (me["authenticated"], me["sub"], me["role"], me["jobs"]) == (True, "ana", "viewer", ["x*"])
    bad = await (await secured.get("/api/whoami", headers=bearer("junk"))).json()
    assert bad["authenticated"] is False and bad["reason"]


async def test_sockets_per_token_are_limited(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(auth_jwt_secret=SECRET, ws_max_per_token=2)
    base = str(client.make_url("")).rstrip("/").replace("http://", "ws://")
    headers = bearer(token("viewer", "v"))
    async with aiohttp.ClientSession() as session:
        first = await session.ws_connect(f"{base}/ws", headers=headers)
        second = await session.ws_connect(f"{base}/ws", headers=headers)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{base}/ws", headers=headers)
        assert refused.value.status == 429
        other = await session.ws_connect(f"{base}/ws", headers=bearer(token("viewer", "w")))
        await first.close()
        for _ in range(50):  # the server notices the close
            try:
                third = await session.ws_connect(f"{base}/ws", headers=headers)
                break
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the closed socket was not counted down")
        for ws in (second, other, third):
            await ws.close()


async def test_client_tokens_must_name_their_jobs(secured: Client) -> None:
    unscoped = bearer(issue_token(SECRET, "c1", "client", 600))
    resp = await secured.post("/api/update", json=update_body("c1", "j1"), headers=unscoped)
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "token_not_scoped")
    resp = await secured.post("/api/jobs/ss/keys", json=key_body("c1"), headers=unscoped)
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "token_not_scoped")
    # An intruder whose token names other jobs cannot join (or complete) this one.
    intruder = bearer(token("client", "intruder", jobs=["intruder-*"]))
    resp = await secured.post("/api/update", json=update_body("intruder", "j1"), headers=intruder)
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "job_not_allowed")


async def test_scoped_tokens_see_only_their_jobs_everywhere(secured: Client) -> None:
    scoped = bearer(token("viewer", "v", jobs=["j*"]))
    listed = await (await secured.get("/api/jobs", headers=scoped)).json()
    assert [job["jobId"] for job in listed["jobs"]] == ["j1"]
    assert (await secured.get("/metrics", headers=scoped)).status == 403
    nothing = bearer(token("viewer", "v", jobs=[]))
    assert (await (await secured.get("/api/jobs", headers=nothing)).json())["jobs"] == []
    base = str(secured.make_url("")).rstrip("/").replace("http://", "ws://")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}/ws", headers=nothing) as ws:
        assert (await ws.receive_json())["jobs"] == []
    admin_scoped = bearer(token("admin", "a", jobs=["other"]))
    await secured.post("/api/jobs/other/cancel", headers=admin_scoped)
    entries = (await (await secured.get("/api/audit", headers=admin_scoped)).json())["entries"]
    # The fixture wrote to j1, ss and other: this admin sees the entries of "other" only.
    assert [(e["job"], e["action"]) for e in entries] == [
        ("other", "POST /api/jobs/other/cancel"),
        ("other", "POST /api/update"),
    ]


@pytest.mark.parametrize("before", ["99999999999999999999999-0", "0-0", "1-", "-1", "x", "1-2-3"])
async def test_bad_audit_cursors_are_400(secured: Client, before: str) -> None:
    resp = await secured.get(f"/api/audit?before={before}", headers=bearer(token("admin")))
    assert resp.status == 400


async def test_refused_writes_are_limited_and_cannot_flush_the_audit_trail(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(auth_jwt_secret=SECRET, audit_max_entries=100, rate_limit_ip_writes=30)
    admin = bearer(token("admin", "root"))
    assert (await client.post("/api/jobs/x/cancel", headers=admin)).status == 404
    statuses = [(await client.post("/api/jobs/x/cancel", headers=bearer("forged"))).status for _ in range(150)]
    assert statuses[:30] == [401] * 30 and set(statuses[30:]) == {429}
    # The admin's entry is still there: unidentified refusals are logged, not stored.
    entries = (await (await client.get("/api/audit", headers=admin)).json())["entries"]
    assert [(e["who"], e["status"]) for e in entries] == [("root", "404")]
    # ...and they spent a bucket of their own: an identified client from the same address may still write.
    resp = await client.post("/api/update", json=update_body("c9", "fresh"), headers=bearer(token("client", "c9")))
    assert resp.status == 200


async def test_log_lines_cannot_be_forged(secured: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="orchestrator.audit")
    await secured.post("/api/jobs/x%0Awho=root%20role=admin%20status=200/cancel")
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.audit"]
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    assert "%0A" in lines[-1] or "\\x0a" in lines[-1]


async def test_a_socket_closes_when_its_token_expires(secured: Client) -> None:
    base = str(secured.make_url("")).rstrip("/").replace("http://", "ws://")
    brief = jwt.encode({"sub": "v", "role": "viewer", "exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}/ws", headers=bearer(brief)) as ws:
        assert (await ws.receive_json())["type"] == "snapshot"
        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == 1008


async def test_forwarded_for_is_believed_from_trusted_proxies_only(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(auth_jwt_secret=SECRET, trusted_proxies=("127.0.0.1",))
    admin = bearer(token("admin", "root"))
    forwarded = {**admin, "X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    await client.post("/api/jobs/x/cancel", headers=forwarded)
    await client.post("/api/jobs/y/cancel", headers={**admin, "X-Forwarded-For": "not an address"})
    entries = (await (await client.get("/api/audit", headers=admin)).json())["entries"]
    assert [e["ip"] for e in entries] == ["invalid-forwarded-for", "10.0.0.1"]
    untrusting: Client = await make_client(auth_jwt_secret=SECRET)
    await untrusting.post("/api/jobs/x/cancel", headers=forwarded)
    entries = (await (await untrusting.get("/api/audit", headers=admin)).json())["entries"]
    assert entries[0]["ip"] == "127.0.0.1"


async def test_a_client_socket_ends_with_its_job(secured: Client) -> None:
    base = str(secured.make_url("")).rstrip("/").replace("http://", "ws://")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{base}/ws/jobs/j1", headers=bearer(token("client", "c1")))
        assert (await ws.receive_json())["type"] == "snapshot"
        await secured.app[STORE].expire_stale(now=10**15)  # every job of this test expires
        assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "job.expired"
        closing = await asyncio.wait_for(ws.receive(), 5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()
