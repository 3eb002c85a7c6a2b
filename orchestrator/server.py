"""Running the app on a socket: aiohttp's AppRunner with this service's connection protocol
(orchestrator/protocol.py) and its admission rules (orchestrator/edge.py), instead of web.run_app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from orchestrator.edge import Edge
from orchestrator.protocol import EdgeProtocol
from orchestrator.typedefs import METRICS, SETTINGS

logger = logging.getLogger("orchestrator.main")

# aiohttp's defaults under web.run_app.
KEEPALIVE_SECONDS = 75.0
BACKLOG = 128
SHUTDOWN_SECONDS = 10.0


class Listener:
    """An app served on host:port; ``port`` is the bound one (ask for 0 to get a free port)."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, edge: Edge) -> None:
        self.runner = runner
        self.server = server
        self.edge = edge
        self.port: int = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.edge.shutting_down = True
        self.server.close()
        await self.runner.cleanup()


async def start(app: web.Application, host: str, port: int, *, fd_limit: int | None = None) -> Listener:
    """Start ``app`` (its startup and cleanup contexts run here) and listen on ``host``:``port``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    handler = runner.server
    assert handler is not None
    loop = asyncio.get_running_loop()
    edge = Edge(app[SETTINGS], app[METRICS], fd_limit)

    def protocol() -> EdgeProtocol:
        return EdgeProtocol(handler, loop=loop, edge=edge, keepalive_timeout=KEEPALIVE_SECONDS, access_log=None)

    try:
        server = await loop.create_server(protocol, host, port, backlog=BACKLOG)
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(runner, server, edge)


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    listener = await start(app, host, port)
    edge = listener.edge
    fallback = loop.get_exception_handler()

    def on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio logs a traceback for every accept() that fails for want of descriptors: one line instead.
        if edge.handle_loop_exception(loop, context):
            return
        if fallback is not None:
            fallback(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_loop_exception)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await listener.stop()
