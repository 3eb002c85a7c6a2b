"""This process's open WebSockets: the registry behind the connection limits and shutdown, and the
bounded send path of one socket (a client that stops reading is dropped, not buffered for)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

from aiohttp import WSCloseCode, web

logger = logging.getLogger(__name__)

SLOW_CONSUMER = WSCloseCode.TRY_AGAIN_LATER  # 1013: the client did not keep up; reconnect with ?since=


class SocketRegistry:
    """Open sockets of this process, for the connection limit and for closing them on shutdown."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.per_subject: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.sockets)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def add(self, ws: web.WebSocketResponse, subject: str | None) -> None:
        """Count an open socket (and its token's subject, when authenticated)."""
        self.sockets.add(ws)
        if subject is not None:
            self.per_subject[subject] += 1

    def discard(self, ws: web.WebSocketResponse, subject: str | None) -> None:
        self.sockets.discard(ws)
        if subject is not None:
            self.per_subject[subject] -= 1
            if self.per_subject[subject] <= 0:
                del self.per_subject[subject]

    async def close_all(self) -> None:
        """Close every socket with 1001 (going away); shutdown would otherwise wait for each."""
        sockets = list(self.sockets)
        if sockets:
            logger.info("Closing %d WebSocket(s) for shutdown", len(sockets))
        await asyncio.gather(
            *(close_socket(ws, WSCloseCode.GOING_AWAY, b"server shutting down") for ws in sockets),
            return_exceptions=True,
        )


async def close_socket(ws: web.WebSocketResponse, code: int, message: bytes, transport: Any = None) -> None:
    """Close ``ws`` within a second, or abort its ``transport`` (a client that does not answer the close)."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), 1.0)
    except (TimeoutError, ConnectionError, RuntimeError):
        if transport is not None:
            transport.abort()


class SlowConsumer(Exception):
    """The client is not reading: its queue or its transport buffer is full."""


class Outbox:
    """Sends to one socket, refusing to buffer more than ``limit`` bytes in user space for a client
    that has stopped reading (aiohttp would otherwise queue a few hundred KB before blocking)."""

    def __init__(self, ws: web.WebSocketResponse, transport: Any, limit: int) -> None:
        self.ws = ws
        self.transport = transport
        self.limit = limit

    async def text(self, data: str) -> None:
        if self.transport is not None and self.transport.get_write_buffer_size() > self.limit:
            raise SlowConsumer(f"{self.transport.get_write_buffer_size()} bytes unsent")
        await self.ws.send_str(data)

    async def json(self, data: dict[str, Any]) -> None:
        await self.text(json.dumps(data))

    @property
    def closed(self) -> bool:
        return self.ws.closed
