"""The connection edge, through real sockets to the server as `orchestrator serve` runs it (server.start):
JSON for the errors aiohttp answers itself, read deadlines, the per-IP cap, descriptor exhaustion,
masked WebSocket frames, and the event-loop lag metric."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis
import pytest

from orchestrator import server
from orchestrator.app import create_app
from orchestrator.protocol import MaskedFramesOnly
from orchestrator.settings import Settings
from tests.support import REPO, free_port

Start = Callable[..., Any]


@pytest.fixture
async def start(settings: Settings) -> AsyncIterator[Start]:
    """Starts the app on a free port as `orchestrator serve` does, with the given settings changed."""
    listeners: list[server.Listener] = []
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)

    async def make(**overrides: Any) -> server.Listener:
        listener = await server.start(create_app(settings.with_overrides(**overrides), redis=redis), "127.0.0.1", 0)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        await listener.stop()
    await redis.aclose()


async def read_all(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything until the server closes the connection (a TimeoutError if it does not, within ``within``)."""
    chunks = []
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def exchange(port: int, data: bytes, within: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await read_all(reader, within)
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str | None = None) -> dict[str, Any]:
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers["content-type"].startswith("application/json"), raw[:300]
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message"}, error
    if code is not None:
        assert error["code"] == code, error
    return error  # type: ignore[no-any-return]


def request(port: int, method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(port: int, path: str) -> bytes:
    return request(port, "GET", path, "Connection: close")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"GE T / HTTP/1.1\r\nHost: localhost\r\n\r\n", "bad_request_line"),
        (b"GET /\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n", "bad_request_line"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", "malformed_request"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 9 * 1024 + b"\r\n\r\n", "line_too_long"),
        (b"GET /" + b"a" * 9 * 1024 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", "line_too_long"),
        (
            b"POST /api/update HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            "malformed_request",
        ),
    ],
    ids=["bad-method", "control-char-in-path", "bad-header", "9-KB-header", "9-KB-path", "bad-chunk-size"],
)
async def test_protocol_errors_are_json(start: Start, raw: bytes, code: str | None) -> None:
    listener = await start()
    assert_json_error(await exchange(listener.port, raw), 400, code)
    # The connection and the server are still fine for the next client.
    assert parse(await exchange(listener.port, get(listener.port, "/healthz")))[0] == 200


@pytest.mark.parametrize(
    "path",
    ["/static/nope.js", "/static/a%2Fb", "/static/app.js/x", "/static/" + "a" * 300, "/static/%2e%2e/setup.py"],
    ids=["missing", "encoded-slash", "below-a-file", "name-too-long", "dot-dot"],
)
async def test_static_file_misses_are_json_404s(start: Start, path: str) -> None:
    listener = await start()
    assert_json_error(await exchange(listener.port, get(listener.port, path)), 404)


async def test_static_files_are_still_served(start: Start) -> None:
    listener = await start()
    status, headers, body = parse(await exchange(listener.port, get(listener.port, "/static/app.js")))
    assert status == 200
    assert "javascript" in headers["content-type"]
    assert body == (REPO / "static" / "app.js").read_bytes()


@pytest.mark.parametrize("path", ["/api/update", "/api/smpc/callback/j1", "/api/jobs/j1/keys"])
async def test_a_stalled_body_gets_408_and_the_connection_closed(start: Start, path: str) -> None:
    listener = await start(http_body_timeout_seconds=0.3)
    raw = request(
        listener.port, "POST", path, "Content-Type: application/json", "Content-Length: 100", body=b'{"jobId": "j'
    )
    started = time.monotonic()
    answer = await exchange(listener.port, raw, within=3)
    assert time.monotonic() - started < 2
    assert_json_error(answer, 408, "request_timeout")
    assert parse(answer)[1]["connection"] == "close"


async def test_stalled_headers_get_408_and_an_idle_connection_is_closed(start: Start) -> None:
    listener = await start(http_header_timeout_seconds=0.3)
    partial = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{listener.port}\r\n".encode()
    assert_json_error(await exchange(listener.port, partial, within=3), 408, "request_timeout")
    # A connection that never sends a byte is closed without an answer.
    assert await exchange(listener.port, b"", within=3) == b""


async def test_a_slow_but_timely_client_is_served(start: Start) -> None:
    listener = await start(http_header_timeout_seconds=0.5, http_body_timeout_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        for n in range(2):
            if n:
                await asyncio.sleep(0.7)  # idle between keep-alive requests: no header deadline runs
            body = json.dumps({"jobId": "slow", "clientId": "a", "totalClients": 2}).encode()
            raw = request(
                listener.port, "POST", "/api/update", "Content-Type: application/json", f"Content-Length: {len(body)}"
            )
            writer.write(raw[:20])
            await asyncio.sleep(0.2)
            writer.write(raw[20:] + body[:10])
            await asyncio.sleep(0.2)
            writer.write(body[10:])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
            await asyncio.wait_for(reader.readexactly(length), 3)
    finally:
        writer.close()


async def test_connections_over_the_per_ip_cap_are_refused(start: Start) -> None:
    listener = await start(max_connections_per_ip=3)
    held = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(3)]
    try:
        for reader, writer in held:  # each is accepted and served (and stays open)
            writer.write(request(listener.port, "GET", "/healthz"))
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)).startswith(b"HTTP/1.1 200")
        error = assert_json_error(await exchange(listener.port, b""), 429, "too_many_connections")
        assert "3" in error["message"]
        held.pop()[1].close()
        await asyncio.sleep(0.1)
        answer = await exchange(listener.port, get(listener.port, "/healthz"))
        assert parse(answer)[0] == 200
        metrics = (await exchange(listener.port, get(listener.port, "/metrics"))).decode()
        assert 'orchestrator_http_connections_refused_total{reason="per_ip_limit"} 1.0' in metrics
    finally:
        for _, writer in held:
            writer.close()


def ws_frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    assert len(payload) < 126
    if not masked:
        return bytes([0x80 | opcode, len(payload)]) + payload
    key = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


async def test_an_unmasked_websocket_frame_closes_the_connection_with_1002(start: Start) -> None:
    listener = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(
            request(
                listener.port,
                "GET",
                "/ws",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            )
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 101"), head
        # A masked frame is read as usual (the application-level ping is answered); split across writes,
        # its header too.
        frame = ws_frame(0x1, b"ping")
        writer.write(frame[:1])
        await asyncio.sleep(0.05)
        writer.write(frame[1:])
        async with asyncio.timeout(3):
            while (await read_ws_frame(reader)) != (0x1, b'{"type":"pong"}'):
                pass
        writer.write(ws_frame(0x1, b"ping", masked=False))
        async with asyncio.timeout(3):
            while (received := await read_ws_frame(reader))[0] != 0x8:
                pass
        assert received[1][:2] == (1002).to_bytes(2, "big")
        assert await read_all(reader, 3) == b""
    finally:
        writer.close()


class RecordingReader:
    def __init__(self) -> None:
        self.fed = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


def masked(payload: bytes) -> bytes:
    n = len(payload)
    length = (
        bytes([0x80 | n])
        if n < 126
        else bytes([0xFE]) + n.to_bytes(2, "big")
        if n < 65536
        else bytes([0xFF]) + n.to_bytes(8, "big")
    )
    key = b"\x01\x02\x03\x04"
    return b"\x82" + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000, 100_000])
def test_the_mask_check_finds_every_frame_header_however_the_bytes_arrive(chunk: int) -> None:
    good = masked(b"a" * 5) + masked(b"b" * 300) + masked(b"c" * 70_000) + masked(b"")
    stream = good + ws_frame(0x1, b"late", masked=False) + masked(b"never read")
    reader = RecordingReader()
    guard = MaskedFramesOnly(reader)
    for i in range(0, len(stream), chunk):
        guard.feed_data(stream[i : i + chunk])
    # Everything before the unmasked frame reaches aiohttp's reader as sent, then a frame it fails with 1002;
    # nothing after.
    assert reader.fed == good + b"\x8f\x80"
    assert guard.feed_data(masked(b"more")) == (True, b"")
    assert reader.fed == good + b"\x8f\x80"


async def test_event_loop_lag_is_a_metric(start: Start) -> None:
    listener = await start()
    await asyncio.sleep(0.3)
    time.sleep(0.3)  # noqa: ASYNC251 - the stall the metric is there to show
    await asyncio.sleep(0.3)
    metrics = (await exchange(listener.port, get(listener.port, "/metrics"))).decode()
    count = float(re.search(r"^orchestrator_event_loop_lag_seconds_count (\S+)$", metrics, re.M)[1])  # type: ignore[index]
    fast = float(re.search(r'^orchestrator_event_loop_lag_seconds_bucket\{le="0\.1"\} (\S+)$', metrics, re.M)[1])  # type: ignore[index]
    assert count >= 2
    assert fast <= count - 1  # the 0.3 s stall was seen


# Descriptor exhaustion, with a real `orchestrator serve` under a small RLIMIT_NOFILE.
FD_LIMIT = 128


def serve_with_fd_limit(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDIS_HOST", "REDIS_PORT"}}
    full_env.update(
        {"PORT": str(port), "HOST": "127.0.0.1", "LOG_DIR": str(tmp_path), "RESULTS_SAVE_PATH": str(tmp_path), **env}
    )
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve"],
            env=full_env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )
    # Long before it listens (and without a preexec_fn in a threaded test process).
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    return proc, port, stderr


async def get_status(port: int, path: str = "/healthz") -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
            session.get(f"http://127.0.0.1:{port}{path}") as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_for_status(port: int, status: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while await get_status(port) != status:
        assert time.monotonic() < deadline, f"no {status} from :{port} within {within} s"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def fd_limited_service(tmp_path: Path, **env: str) -> AsyncIterator[int]:
    proc, port, _ = serve_with_fd_limit(tmp_path, **env)
    try:
        await wait_for_status(port, 200)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def open_idle(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sockets = []
    for _ in range(count):
        sockets.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3))
    return sockets


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "computations-orchestrator.log").read_text(errors="replace")


async def test_out_of_descriptors_new_connections_get_503_and_the_service_recovers(tmp_path: Path) -> None:
    async with fd_limited_service(tmp_path, FD_RESERVE="16", HTTP_HEADER_TIMEOUT="60") as port:
        idle = await open_idle(port, FD_LIMIT)
        try:
            answers = await asyncio.gather(*(read_all(reader, 2) for reader, _ in idle), return_exceptions=True)
            refused = [answer for answer in answers if isinstance(answer, bytes)]
            # The first ~100 are accepted and left idle; past the reserve they are answered at once and closed.
            assert 16 <= len(refused) < FD_LIMIT, len(refused)
            for answer in refused:
                assert_json_error(answer, 503, "server_busy")
            assert await get_status(port) == 503
        finally:
            for _, writer in idle:
                writer.close()
        await wait_for_status(port, 200, within=5)
        await asyncio.sleep(1.1)
        assert await get_status(port, "/metrics") == 200  # the first accept a second after the last refusal
    log = log_text(tmp_path)
    assert "Traceback" not in log
    assert 1 <= log.count("Refusing new connections with 503") <= 4, log
    assert "Accepting connections again" in log


async def test_accept_failing_for_want_of_descriptors_is_one_line_a_second(tmp_path: Path) -> None:
    async with fd_limited_service(tmp_path, FD_RESERVE="0", HTTP_HEADER_TIMEOUT="60") as port:
        idle = await open_idle(port, FD_LIMIT)
        try:
            await asyncio.sleep(2.5)  # asyncio retries accept() each second, failing each time
        finally:
            for _, writer in idle:
                writer.close()
        await wait_for_status(port, 200, within=5)
    log = log_text(tmp_path)
    assert "Traceback" not in log and "socket.accept() out of system resource" not in log, log
    assert 1 <= log.count("Cannot accept connections: Too many open files") <= 5, log
