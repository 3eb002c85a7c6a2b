"""WebSocket push: snapshot first, events in version order, resume by version, origin, limits, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


async def receive(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> dict[str, Any]:
    message = await ws.receive(timeout=within)
    assert message.type == WSMsgType.TEXT, message
    return json.loads(message.data)  # type: ignore[no-any-return]


async def receive_n(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    return [await receive(ws) for _ in range(n)]


async def update(client: Client, job: str, cid: str, total: int = 3) -> None:
    resp = await client.post("/api/update", json={"jobId": job, "clientId": cid, "totalClients": total})
    assert resp.status == 200, await resp.text()


async def test_job_socket_snapshot_then_events_in_order(client: Client) -> None:
    await update(client, "w1", "a")
    async with client.ws_connect("/ws/jobs/w1") as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert (snapshot["jobId"], snapshot["version"]) == ("w1", 2)
        assert snapshot["job"]["doneCount"] == 1
        assert [c["clientId"] for c in snapshot["job"]["clients"]] == ["a"]
        await update(client, "w1", "b")
        await update(client, "w1", "b")  # a duplicate publishes nothing
        await update(client, "w1", "c")
        events = await receive_n(ws, 3)
        assert [(e["type"], e["version"]) for e in events] == [
            ("client.done", 3),
            ("client.done", 4),
            ("job.aggregating", 5),
        ]
        assert events[0] == {
            "type": "client.done",
            "jobId": "w1",
            "version": 3,
            "at": events[0]["at"],
            "clientId": "b",
            "doneCount": 2,
            "totalClients": 3,
        }
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)


async def test_socket_for_a_job_not_yet_created(client: Client) -> None:
    async with client.ws_connect("/ws/jobs/later") as ws:
        snapshot = await receive(ws)
        assert (snapshot["type"], snapshot["version"], snapshot["job"]) == ("snapshot", 0, None)
        await update(client, "later", "a", total=1)
        events = await receive_n(ws, 3)
        assert [e["type"] for e in events] == ["job.created", "client.done", "job.aggregating"]
        assert [e["version"] for e in events] == [1, 2, 3]


async def test_resume_with_since_gets_exactly_the_missed_events(client: Client) -> None:
    await update(client, "r1", "a", total=5)
    async with client.ws_connect("/ws/jobs/r1") as ws:
        last = (await receive(ws))["version"]
    await update(client, "r1", "b", total=5)
    await update(client, "r1", "c", total=5)
    async with client.ws_connect(f"/ws/jobs/r1?since={last}") as ws:
        missed = await receive_n(ws, 2)
        assert [(e["type"], e.get("clientId"), e["version"]) for e in missed] == [
            ("client.done", "b", 3),
            ("client.done", "c", 4),
        ]
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
        await update(client, "r1", "d", total=5)
        assert (await receive(ws))["version"] == 5
    # Up to date: nothing is sent until something happens.
    async with client.ws_connect("/ws/jobs/r1?since=5") as ws:
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)


async def test_resume_older_than_history_gets_a_snapshot(make_client: Callable[..., Any]) -> None:
    client = await make_client(event_history=3)
    for cid in "abcdef":
        await update(client, "old", cid, total=10)
    async with client.ws_connect("/ws/jobs/old?since=1") as ws:
        snapshot = await receive(ws)
        assert (snapshot["type"], snapshot["version"]) == ("snapshot", 7)
        assert snapshot["job"]["doneCount"] == 6
    # A since beyond the job's version (a client confused about which job) also gets a snapshot.
    async with client.ws_connect("/ws/jobs/old?since=99") as ws:
        assert (await receive(ws))["type"] == "snapshot"


async def test_all_jobs_socket(client: Client) -> None:
    await update(client, "x1", "a")
    await update(client, "x2", "a")
    async with client.ws_connect("/ws") as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert [j["jobId"] for j in snapshot["jobs"]] == ["x2", "x1"]
        await update(client, "x1", "b")
        await update(client, "x3", "a", total=1)
        events = await receive_n(ws, 4)
        assert [(e["jobId"], e["type"], e["version"]) for e in events] == [
            ("x1", "client.done", 3),
            ("x3", "job.created", 1),
            ("x3", "client.done", 2),
            ("x3", "job.aggregating", 3),
        ]


async def test_text_ping_gets_pong(client: Client) -> None:
    async with client.ws_connect("/ws") as ws:
        await receive(ws)
        await ws.send_str("ping")
        assert await receive(ws) == {"type": "pong"}


async def test_origin_check(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    host = f"{client.host}:{client.port}"
    async with client.ws_connect("/ws", headers={"Origin": f"http://{host}"}) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    allowed = await make_client(ws_allowed_origins=("https://dash.example",))
    async with allowed.ws_connect("/ws", headers={"Origin": "https://dash.example"}) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    # Listing other origins does not shut out the service's own pages (the dashboard).
    async with allowed.ws_connect("/ws", headers={"Origin": f"http://{allowed.host}:{allowed.port}"}) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await allowed.ws_connect("/ws/jobs/j1", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403


async def test_connection_limit_and_plain_get(make_client: Callable[..., Any]) -> None:
    client = await make_client(ws_max_connections=1)
    async with client.ws_connect("/ws") as ws:
        await receive(ws)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws/jobs/j")
        assert refused.value.status == 503
    plain = await client.get("/ws/jobs/j")
    assert plain.status == 400
    assert (await plain.json())["error"]["code"] == "websocket_required"
    bad = await client.get("/ws/jobs/j?since=-1")
    assert bad.status == 400


async def test_shutdown_closes_sockets_with_1001(client: Client) -> None:
    ws = await client.ws_connect("/ws")
    await receive(ws)
    closing = asyncio.create_task(client.server.close())
    message = await ws.receive(timeout=5)
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == 1001
    await ws.close()
    await asyncio.wait_for(closing, 10)


async def test_all_jobs_socket_sends_a_job_it_did_not_know_whole(make_client: Callable[..., Any]) -> None:
    client = await make_client(ws_snapshot_jobs=1)
    await update(client, "older", "a")
    await update(client, "newer", "a")
    async with client.ws_connect("/ws") as ws:
        assert [j["jobId"] for j in (await receive(ws))["jobs"]] == ["newer"]
        await update(client, "older", "b")
        message = await receive(ws)
        assert (message["type"], message["jobId"], message["version"]) == ("job.snapshot", "older", 3)
        assert (message["job"]["doneCount"], message["job"]["totalClients"]) == (2, 3)
        await update(client, "older", "c")
        assert [(m["type"], m["version"]) for m in [await receive(ws), await receive(ws)]] == [
            ("client.done", 4),
            ("job.aggregating", 5),
        ]
