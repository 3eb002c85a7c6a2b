"""What a web page the operator visits cannot do (security.browsers): post a form across sites, write
from a foreign Origin, or read the service through a DNS-rebinding host name; on fakeredis and the real
Redis. The same-origin dashboard keeps working (tests/e2e)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from orchestrator.security.browsers import host_allowed, same_origin
from orchestrator.security.policy import ACCESS, BODY_TYPES
from orchestrator.security.tokens import issue_token
from orchestrator.settings import Settings, SettingsError

Client = TestClient[Any, Any]
SECRET = "s3cret-for-tests-only-0123456789abcdef"
EVIL = "http://evil.example"


async def job_status(client: Client, job_id: str) -> str:
    body = await (await client.get(f"/api/jobs/{job_id}")).json()
    return str(body["status"])


async def new_job(client: Client, job_id: str = "j1") -> None:
    body = {"jobId": job_id, "clientId": "c1", "totalClients": 2}
    assert (await client.post("/api/update", json=body)).status == 200


def own_origin(client: Client) -> str:
    return f"http://{client.host}:{client.port}"


@pytest.mark.parametrize(
    "headers, data",
    [
        ({"Content-Type": "text/plain"}, '{"reason": "csrf"}'),
        ({"Content-Type": "text/plain"}, ""),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "reason=csrf"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, "--x--\r\n"),
        ({}, b'{"reason": "no content type"}'),
    ],
    ids=["text-plain", "empty-text-plain", "urlencoded", "multipart", "body-without-type"],
)
async def test_a_cross_site_form_cannot_cancel_a_job(client: Client, headers: dict[str, str], data: Any) -> None:
    await new_job(client)
    # What an auto-submitting form on another site sends (its Origin aside: checked on its own below).
    resp = await client.post("/api/jobs/j1/cancel", data=data, headers=headers, skip_auto_headers=["Content-Type"])
    body = await resp.json()
    assert resp.status == 415, body
    assert body["error"]["code"] == "unsupported_media_type"
    assert body["error"]["accepted"] == ["application/json"]
    assert await job_status(client, "j1") == "IN_PROGRESS"


async def test_a_foreign_origin_cannot_write(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(cors_allowed_origins=("https://app.example",))
    await new_job(client)
    assert client.port is not None
    for origin in (EVIL, "null", f"{EVIL}:{client.port}", f"https://{client.host}:{client.port + 1}"):
        # A body-less POST (a no-cors fetch) carries no Content-Type: the Origin is what gives it away.
        resp = await client.post("/api/jobs/j1/cancel", headers={"Origin": origin})
        body = await resp.json()
        assert resp.status == 403, (origin, body)
        assert body["error"]["code"] == "origin_not_allowed"
        resp = await client.post(
            "/api/update", json={"jobId": "j2", "clientId": "c1", "totalClients": 1}, headers={"Origin": origin}
        )
        assert resp.status == 403
    assert await job_status(client, "j1") == "IN_PROGRESS"
    assert (await client.get("/api/jobs/j2")).status == 404
    # Same origin (the dashboard), a listed origin, and no Origin at all (not a browser) may write.
    for headers in ({"Origin": own_origin(client)}, {"Origin": "https://app.example"}, {}):
        resp = await client.post("/api/ws-ticket", headers=headers)
        assert resp.status == 201, (headers, await resp.json())
    resp = await client.post("/api/jobs/j1/cancel", json={"reason": "by hand"}, headers={"Origin": own_origin(client)})
    assert resp.status == 200
    assert await job_status(client, "j1") == "CANCELLED"


async def test_behind_a_trusted_proxy_that_rewrites_host_the_forwarded_host_is_the_origin(
    make_client: Callable[..., Any],
) -> None:
    """nginx's default proxy_pass sends Host: 127.0.0.1:5000; the browser's Origin is the public name, which
    the proxy forwards in X-Forwarded-Host."""
    public = "https://orch.example.org"
    forwarded = {"Origin": public, "X-Forwarded-Host": "orch.example.org", "X-Forwarded-Proto": "https"}
    untrusted: Client = await make_client()
    assert (await untrusted.post("/api/ws-ticket", headers=forwarded)).status == 403  # anyone can send the header
    trusted: Client = await make_client(trusted_proxies=("127.0.0.1",))
    assert (await trusted.post("/api/ws-ticket", headers=forwarded)).status == 201
    other = {**forwarded, "Origin": EVIL}
    assert (await trusted.post("/api/ws-ticket", headers=other)).status == 403


async def test_metrics_answer_any_host(client: Client) -> None:
    """Prometheus scrapes a pod by its address."""
    assert (await client.get("/metrics", headers={"Host": "10.1.2.3:5000"})).status == 200
    assert (await client.get("/api/jobs", headers={"Host": "10.1.2.3:5000"})).status == 421


async def test_origin_and_host_are_checked_with_authentication_on_too(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(auth_jwt_secret=SECRET)
    admin = {"Authorization": f"Bearer {issue_token(SECRET, 'root', 'admin', 600)}"}
    resp = await client.post("/api/jobs/x/cancel", headers={**admin, "Origin": EVIL})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "origin_not_allowed"
    resp = await client.post("/api/jobs/x/cancel", data="x", headers={**admin, "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await client.get("/api/jobs", headers={**admin, "Host": "evil.example"})
    assert resp.status == 421 and (await resp.json())["error"]["code"] == "host_not_allowed"
    assert (await client.get("/api/jobs", headers=admin)).status == 200


async def test_each_write_takes_its_routes_media_types(client: Client) -> None:
    await new_job(client)
    octets = {"Content-Type": "application/octet-stream"}
    # The update takes a vector as octet-stream (refused further on for this job, but not for its type).
    resp = await client.post("/api/update?jobId=j1&clientId=c2&totalClients=2", data=b"\0" * 8, headers=octets)
    assert resp.status != 415, await resp.json()
    resp = await client.post("/api/jobs/j1/keys", data=b"{}", headers=octets)
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_media_type"
    resp = await client.post("/api/ws-ticket", data="", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    # An empty POST may say octet-stream (aiohttp's client does); a body must be of the route's type.
    assert (await client.post("/api/jobs/j1/cancel", data=b"{}", headers=octets)).status == 415
    assert (await client.post("/api/ws-ticket", data=b"", headers=octets)).status == 201
    # JSON with parameters, or as a +json type, is JSON.
    resp = await client.post(
        "/api/jobs/j1/cancel", data=b'{"reason": "r"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status == 200
    resp = await client.post("/api/jobs/j1/cancel", data=b"{}", headers={"Content-Type": "application/ld+json"})
    assert resp.status == 200


def test_every_write_route_has_its_media_types() -> None:
    writes = {key for key in ACCESS if key[0] == "POST"}
    assert writes == set(BODY_TYPES)


async def test_a_rebinding_host_cannot_read(client: Client) -> None:
    await new_job(client)
    for path in ("/api/jobs", "/api/jobs/j1", "/api/job-status/j1", "/dashboard", "/static/app.js", "/nowhere"):
        resp = await client.get(path, headers={"Host": "evil.example"})
        body = await resp.json()
        assert resp.status == 421, (path, body)
        assert body["error"] == {
            "code": "host_not_allowed",
            "message": "This service does not answer to that host name: list it in ALLOWED_HOSTS",
            "host": "evil.example",
        }
    for path in ("/ws", "/ws/jobs/j1"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(path, headers={"Host": f"evil.example:{client.port}"})
        assert refused.value.status == 421
    resp = await client.post("/api/jobs/j1/cancel", headers={"Host": "evil.example", "Origin": "http://evil.example"})
    assert resp.status == 421
    assert await job_status(client, "j1") == "IN_PROGRESS"
    # Probes answer whatever host they name (a kubelet's is the pod's address).
    assert (await client.get("/healthz", headers={"Host": "10.1.2.3:5000"})).status == 200
    for host in ("localhost", f"localhost:{client.port}", "127.0.0.2:80", "[::1]:5000", "LOCALHOST."):
        resp = await client.get("/api/jobs", headers={"Host": host})
        assert resp.status == 200, host
    async with client.ws_connect("/ws", headers={"Host": f"localhost:{client.port}"}) as ws:
        assert (await ws.receive_json())["type"] == "snapshot"


async def test_allowed_hosts_and_the_public_base_url(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(
        allowed_hosts=("orchestrator", ".example.org"), public_base_url="https://orch.public.example/base"
    )
    for host in ("orchestrator:5000", "example.org", "a.b.example.org", "orch.public.example"):
        assert (await client.get("/api/jobs", headers={"Host": host})).status == 200, host
    for host in ("orchestrator.evil", "badexample.org", "public.example"):
        assert (await client.get("/api/jobs", headers={"Host": host})).status == 421, host
    anything: Client = await make_client(allowed_hosts=("*",))
    assert (await anything.get("/api/jobs", headers={"Host": "evil.example"})).status == 200


def test_host_names() -> None:
    default = Settings()
    assert host_allowed("127.0.0.1:5000", default) and host_allowed("127.9.9.9", default)
    assert not host_allowed("evil.example", default) and not host_allowed("", default)
    assert not host_allowed("127.0.0.1.evil.example", default)
    # The bind address is a name clients use, unless it is the unspecified address.
    assert host_allowed("192.0.2.10:5000", Settings(host="192.0.2.10"))
    assert host_allowed("[2001:db8::1]:5000", Settings(host="2001:db8::1"))
    assert not host_allowed("0.0.0.0:5000", Settings(host="0.0.0.0"))
    assert not host_allowed("192.0.2.10", Settings(host="0.0.0.0"))
    assert host_allowed("localhost:5000", Settings(host="0.0.0.0"))


def test_same_origin() -> None:
    assert same_origin("http://127.0.0.1:5000", "127.0.0.1:5000")
    assert same_origin("https://svc.example", "svc.example")
    assert same_origin("https://svc.example", "SVC.example:443")
    assert not same_origin("http://svc.example", "svc.example:443")
    assert not same_origin("null", "svc.example")
    assert not same_origin("http://svc.example:99999", "svc.example")
    assert not same_origin("ftp://svc.example", "svc.example")


def test_allowed_hosts_setting() -> None:
    env = {"ALLOWED_HOSTS": "Orchestrator, .example.org,10.0.0.5,[::1]"}
    assert Settings.from_env(env).allowed_hosts == ("orchestrator", ".example.org", "10.0.0.5", "[::1]")
    assert Settings.from_env({"ALLOWED_HOSTS": "*"}).allowed_hosts == ("*",)
    for bad in ("http://example.org", "example.org:5000", "a b", "exa/mple"):
        with pytest.raises(SettingsError, match="ALLOWED_HOSTS"):
            Settings.from_env({"ALLOWED_HOSTS": bad})
