"""WebSocket endpoints: `/ws/jobs/{jobId}` (one job) and `/ws` (every job, the dashboard's feed).

A socket gets a snapshot first, then events in version order (feeds.py). Each socket has a bounded
queue fed by the process's EventHub and its own writer task; a socket whose queue overflows (a client
that does not read) is closed with 1013 and its transport aborted, without slowing anyone else
(sockets.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from orchestrator.errors import ApiError, ValidationError
from orchestrator.feeds import AllFeed, JobFeed
from orchestrator.hub import Subscription
from orchestrator.security.policy import principal
from orchestrator.security.tokens import Principal
from orchestrator.settings import Settings
from orchestrator.sockets import SLOW_CONSUMER, Outbox, SlowConsumer, SocketRegistry, close_socket
from orchestrator.typedefs import HUB, SETTINGS, SOCKETS, STORE
from orchestrator.validation import validate_id

logger = logging.getLogger(__name__)


async def job_socket(request: web.Request) -> web.WebSocketResponse:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    raw_since = request.query.get("since")
    since = None
    if raw_since not in (None, ""):
        assert raw_since is not None
        if not (raw_since.isascii() and raw_since.isdigit() and len(raw_since) <= 15):
            raise ValidationError("'since' must be a non-negative integer version", code="invalid_query", field="since")
        since = int(raw_since)
    # A client reads only jobs it takes part in (checked at connect): its socket ends with the job, so a
    # job of the same id created later by others is not shown to it.
    until_expired = principal(request).role == "client"
    feed = JobFeed(request.app[STORE], request.app[HUB], job_id, since, until_expired=until_expired)
    return await _serve(request, feed, job_id)


async def all_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    who = principal(request)
    allow = who.may_touch if who.jobs is not None else None
    feed = AllFeed(request.app[STORE], request.app[HUB], settings.ws_snapshot_jobs, allow)
    return await _serve(request, feed, None)


def _admit(request: web.Request, settings: Settings, registry: SocketRegistry) -> tuple[Principal, str | None]:
    """Refuse a socket over this replica's limits (all sockets, and per token subject); who it is for."""
    if len(registry) >= settings.ws_max_connections:
        raise ApiError("Too many WebSocket connections on this replica", code="too_many_connections", http_status=503)
    who = principal(request)
    subject = who.sub if who.authenticated else None
    if subject is not None and registry.per_subject[subject] >= settings.ws_max_per_token:
        raise ApiError(
            f"{subject} already has {settings.ws_max_per_token} WebSockets open on this replica",
            code="too_many_sockets",
            http_status=429,
            headers={"Retry-After": "5"},
        )
    return who, subject


def _size_send_buffer(transport: Any, size: int) -> None:
    if transport is not None and (sock := transport.get_extra_info("socket")) is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _expire_with_token(
    who: Principal, registry: SocketRegistry, ws: web.WebSocketResponse, transport: Any
) -> asyncio.TimerHandle | None:
    """The token's validity ends the socket too: the client reconnects with a fresh one."""
    if not who.authenticated or who.expires_at is None:
        return None
    return asyncio.get_running_loop().call_later(
        max(who.expires_at - time.time(), 0),
        lambda: registry.spawn(close_socket(ws, WSCloseCode.POLICY_VIOLATION, b"token expired", transport)),
    )


async def _serve(request: web.Request, feed: JobFeed | AllFeed, job_id: str | None) -> web.WebSocketResponse:
    settings: Settings = request.app[SETTINGS]
    registry = request.app[SOCKETS]
    # The handshake's Host and Origin were checked by the security middleware (security.browsers).
    # No per-message compression: with fan-out it would deflate every event once per socket.
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_seconds, max_msg_size=64 * 1024, compress=False)
    if not ws.can_prepare(request).ok:
        raise ValidationError("This endpoint needs a WebSocket upgrade", code="websocket_required")
    who, subject = _admit(request, settings, registry)
    transport = request.transport
    _size_send_buffer(transport, settings.ws_send_buffer_bytes)
    await ws.prepare(request)
    registry.add(ws, subject)
    writer: asyncio.Task[None] | None = None

    def drop_slow_consumer() -> None:
        logger.warning("Dropping a slow WebSocket on %s: it stopped reading", request.path)
        if writer is not None:
            writer.cancel()
        registry.spawn(close_socket(ws, SLOW_CONSUMER, b"slow consumer: reconnect with ?since=", transport))

    outbox = Outbox(ws, transport, settings.ws_send_buffer_bytes)
    expiry = _expire_with_token(who, registry, ws, transport)
    with request.app[HUB].subscribe(job_id, drop_slow_consumer) as sub:
        writer = asyncio.create_task(_write(outbox, feed, sub, drop_slow_consumer))
        try:
            await _read(ws, outbox)
        finally:
            if expiry is not None:
                expiry.cancel()
            registry.discard(ws, subject)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    return ws


async def _read(ws: web.WebSocketResponse, outbox: Outbox) -> None:
    """Read the client's messages until it closes: it sends nothing but application-level pings."""
    async for message in ws:
        if message.type == WSMsgType.TEXT and message.data == "ping":
            # An application-level ping for clients (browsers) that cannot send protocol pings.
            with contextlib.suppress(SlowConsumer, ConnectionError):
                await outbox.text('{"type":"pong"}')


async def _write(outbox: Outbox, feed: JobFeed | AllFeed, sub: Subscription, on_slow: Callable[[], None]) -> None:
    try:
        await feed.run(outbox, sub)
    except SlowConsumer:
        on_slow()
    except (ConnectionError, RuntimeError) as e:
        logger.debug("WebSocket writer ended: %s", e)
    except Exception:
        logger.exception("WebSocket writer failed")
        await close_socket(outbox.ws, WSCloseCode.INTERNAL_ERROR, b"internal error")
