"""Fan-out under stress: across replicas, with a client that never reads, and across a Redis restart."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType

from orchestrator.app import create_app
from orchestrator.settings import Settings
from orchestrator.typedefs import HUB, SOCKETS
from tests.conftest import REAL_REDIS_URL
from tests.support import RedisServerProcess, ServiceProcess
from tests.test_ws import receive


@pytest.mark.real_redis
async def test_socket_on_b_sees_every_event_of_updates_sent_to_a(
    real_redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": REAL_REDIS_URL, "KEY_PREFIX": prefix, "ACCESS_LOG": "false", "AGGREGATION_WORKERS": "0"}
    a, b = ServiceProcess(env, tmp_path / "a"), ServiceProcess(env, tmp_path / "b")
    try:
        await asyncio.gather(a.ready("/readyz"), b.ready("/readyz"))
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{b.base}/ws/jobs/cross") as job_ws,
            session.ws_connect(f"{b.base}/ws") as all_ws,
        ):
            assert (await receive(job_ws))["version"] == 0
            assert (await receive(all_ws))["type"] == "snapshot"

            async def send(cid: str) -> int:
                body = {"jobId": "cross", "clientId": cid, "totalClients": 30}
                async with session.post(f"{a.base}/api/update", json=body) as resp:
                    return resp.status

            # Concurrent, with every client sent twice: duplicates must publish nothing.
            codes = await asyncio.gather(*(send(f"c{i % 30}") for i in range(60)))
            assert set(codes) == {200}
            for ws in (job_ws, all_ws):
                events = [await receive(ws) for _ in range(32)]
                assert [e["version"] for e in events] == list(range(1, 33))
                assert events[0]["type"] == "job.created"
                assert events[-1]["type"] == "job.aggregating"
                assert len({e["clientId"] for e in events if e["type"] == "client.done"}) == 30
                with pytest.raises(asyncio.TimeoutError):
                    await ws.receive(timeout=0.5)
    finally:
        a.stop()
        b.stop()


async def open_stalled_socket(host: str, port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    return reader, writer


async def test_a_socket_that_never_reads_is_dropped_without_slowing_others(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # 3,000 updates' INFO lines, each a record for pytest's capture, are not what this measures.
    caplog.set_level(logging.WARNING, logger="orchestrator")
    client = await make_client(ws_queue_size=64, ws_send_buffer_bytes=8192, access_log=False)
    calm = statistics.median(await _delivery_lags(client, "calm", stalled=False))
    # The healthy socket gets every event in order each time (checked inside), and no slower with a
    # stalled neighbour than without one (a generous bound, in the better of two tries: this machine is
    # shared and noisy, and the test's client and server share one event loop).
    busy = statistics.median(await _delivery_lags(client, "busy", stalled=True))
    if busy > 3 * calm + 0.05:
        busy = min(busy, statistics.median(await _delivery_lags(client, "busy-again", stalled=True)))
    assert busy <= 3 * calm + 0.05, (calm, busy)
    assert client.app[HUB].subscriber_count == 0
    assert len(client.app[SOCKETS]) == 0


async def _delivery_lags(client: Any, job: str, *, stalled: bool, updates: int = 1500) -> list[float]:
    """Send ``updates`` updates while a healthy socket (and maybe a stalled one) watches the job;
    returns, per event, the time from the HTTP response to its receipt on the healthy socket."""
    await client.post("/api/update", json={"jobId": job, "clientId": "c-first", "totalClients": 100000})
    writer = None
    if stalled:
        _, writer = await open_stalled_socket(client.host, client.port, f"/ws/jobs/{job}")
    received: dict[int, float] = {}
    sent: dict[int, float] = {}
    try:
        async with client.ws_connect(f"/ws/jobs/{job}") as healthy:
            assert (await receive(healthy))["type"] == "snapshot"
            assert await _sockets_settle(client, 2 if stalled else 1)
            reading = asyncio.create_task(_read_events(healthy, received, updates))
            await _send_updates(client, job, updates, sent)
            await asyncio.wait_for(reading, 30)
            assert sorted(received) == list(range(3, updates + 3))
            if stalled:
                # The stalled socket has been dropped while the healthy one is still open.
                assert await _sockets_settle(client, 1, pause=0.05)
    finally:
        if writer is not None:
            writer.close()
    await _sockets_settle(client, 0)
    return [received[v] - sent[v] for v in sent]


async def _sockets_settle(client: Any, count: int, *, pause: float = 0.02) -> bool:
    """Whether this process holds ``count`` sockets, within 100 pauses."""
    for _ in range(100):
        if len(client.app[SOCKETS]) == count:
            return True
        await asyncio.sleep(pause)
    return len(client.app[SOCKETS]) == count


async def _read_events(ws: Any, received: dict[int, float], updates: int) -> None:
    """Note when each version arrives, until ``updates`` events did."""
    while len(received) < updates:
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.TEXT
        received[json.loads(message.data)["version"]] = time.monotonic()


async def _send_updates(client: Any, job: str, updates: int, sent: dict[int, float]) -> None:
    """``updates`` updates from as many clients, 25 at a time; note when each version's response came."""

    async def send(i: int) -> None:
        body = {"jobId": job, "clientId": f"c{i}", "totalClients": 100000}
        resp = await client.post("/api/update", json=body)
        sent[(await resp.json())["version"]] = time.monotonic()

    for start in range(0, updates, 25):
        await asyncio.gather(*(send(i) for i in range(start, start + 25)))


@pytest.mark.real_redis
async def test_listener_recovers_after_redis_restart_with_a_fresh_snapshot(
    aiohttp_client: Callable[..., Any], private_redis: RedisServerProcess, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=private_redis.url,
        redis_timeout=1.0,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        pubsub_ping_seconds=0.2,
        pubsub_liveness_seconds=1.0,
    )
    client = await aiohttp_client(create_app(settings))
    await client.post("/api/update", json={"jobId": "rs", "clientId": "a", "totalClients": 3})
    async with client.ws_connect("/ws/jobs/rs") as ws:
        assert (await receive(ws))["version"] == 2
        private_redis.kill()
        await asyncio.sleep(0.5)
        private_redis.start()
        snapshot = await receive(ws, within=15)
        assert snapshot["type"] == "snapshot"
        assert (snapshot["version"], snapshot["job"]["doneCount"]) == (2, 1)
        assert client.app[HUB].reconnects >= 1
        resp = await client.post("/api/update", json={"jobId": "rs", "clientId": "b", "totalClients": 3})
        assert resp.status == 200
        event = await receive(ws)
        assert (event["type"], event["version"], event["clientId"]) == ("client.done", 3, "b")


@pytest.mark.real_redis
async def test_hung_redis_is_noticed_by_the_listener(
    aiohttp_client: Callable[..., Any], private_redis: RedisServerProcess, tmp_path: Path
) -> None:
    import os
    import signal

    settings = Settings(
        redis_url=private_redis.url,
        redis_timeout=0.5,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        pubsub_ping_seconds=0.2,
        pubsub_liveness_seconds=1.0,
    )
    client = await aiohttp_client(create_app(settings))
    hub = client.app[HUB]
    assert not hub.connected.is_set()  # nobody subscribed yet: no pub/sub connection
    ws = await client.ws_connect("/ws")
    await receive(ws)
    assert hub.connected.is_set()
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(50):
            if not hub.connected.is_set():
                break
            await asyncio.sleep(0.1)
        assert not hub.connected.is_set(), "the listener did not notice the hung Redis"
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    await asyncio.wait_for(hub.connected.wait(), 10)
    assert (await receive(ws))["type"] == "snapshot"  # re-synced after the listener came back
    await ws.close()


@pytest.mark.real_redis
async def test_a_connection_silently_re_established_by_the_client_still_resyncs(
    aiohttp_client: Callable[..., Any], private_redis: RedisServerProcess, tmp_path: Path
) -> None:
    """redis-py's retry reconnects a dropped pub/sub connection inside get_message() without raising;
    what was published meanwhile is lost, so the sockets must be re-synced all the same."""
    settings = Settings(
        redis_url=private_redis.url,
        log_dir=str(tmp_path / "logs"),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=0,
    )
    client = await aiohttp_client(create_app(settings))
    await client.post("/api/update", json={"jobId": "blip", "clientId": "a", "totalClients": 3})
    async with client.ws_connect("/ws/jobs/blip") as ws:
        assert (await receive(ws))["version"] == 2
        admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
        try:
            async with admin.pipeline(transaction=True) as pipe:
                # Drop the listener and change the job in one step, so the change is never heard.
                pipe.client_kill_filter(_type="pubsub")
                pipe.hincrby("job:{blip}", "version", 1)
                await pipe.execute()
        finally:
            await admin.aclose()
        snapshot = await receive(ws, within=10)
        assert (snapshot["type"], snapshot["version"]) == ("snapshot", 3)
