"""create_app(): wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import AuthenticationError

from orchestrator import SERVICE_NAME, __version__
from orchestrator.aggregation.backends import Backend, NoneBackend
from orchestrator.aggregation.smpc import SmpcBackend
from orchestrator.aggregation.worker import AggregationService, consumer_name
from orchestrator.connections import create_redis
from orchestrator.hub import EventHub
from orchestrator.janitor import run_janitor
from orchestrator.looplag import watch_loop_lag
from orchestrator.metrics import Metrics
from orchestrator.middleware import observe
from orchestrator.offload import Offloader
from orchestrator.quotas import MemoryGuard
from orchestrator.results.worker import DeliveryService
from orchestrator.routes import setup_routes
from orchestrator.securesum.backend import VectorSumBackend
from orchestrator.securesum.store import RoundStore, VectorStore
from orchestrator.security.audit import AuditLog
from orchestrator.security.guard import guard
from orchestrator.security.tokens import Authenticator
from orchestrator.settings import Settings
from orchestrator.sockets import SocketRegistry
from orchestrator.store import JobStore, StoreUnavailable
from orchestrator.typedefs import (
    AUDIT,
    AUTHENTICATOR,
    HUB,
    MEMORY,
    METRICS,
    OFFLOAD,
    REDIS,
    ROUNDS,
    SETTINGS,
    SOCKETS,
    STORE,
    VECTORS,
)

logger = logging.getLogger(__name__)


def create_app(settings: Settings, redis: aioredis.Redis | None = None) -> web.Application:
    """The application. With ``redis`` given, the caller owns that client; otherwise one is made
    from the settings and closed on cleanup."""
    # Routes read their bodies with their own limits (views.read_body); this is the largest of them.
    client_max_size = max(settings.max_body_bytes, settings.max_vector_body_bytes)
    app = web.Application(middlewares=[observe, guard], client_max_size=client_max_size)
    app[AUTHENTICATOR] = Authenticator(settings)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[OFFLOAD] = Offloader(settings.parse_offload_bytes)
    setup_routes(app)
    app[SOCKETS] = SocketRegistry()
    app.cleanup_ctx.append(_background("loop-lag", lambda app, stop: watch_loop_lag(app[METRICS].loop_lag, stop)))
    app.cleanup_ctx.append(functools.partial(_redis_ctx, redis=redis))
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_background("janitor", lambda app, stop: run_janitor(app[STORE], settings, stop)))
    app.cleanup_ctx.append(_background("memory-guard", lambda app, stop: app[MEMORY].run(stop)))
    app.cleanup_ctx.append(_workers_ctx)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_close_offload)
    return app


def _background(
    name: str, run: Callable[[web.Application, asyncio.Event], Coroutine[Any, Any, None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running ``run(app, stop)`` as a task from startup to cleanup."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run(app, stop), name=name)
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


async def _redis_ctx(app: web.Application, redis: aioredis.Redis | None) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = redis if redis is not None else create_redis(settings)
    app[REDIS] = client
    app[STORE] = JobStore(client, settings, metrics=app[METRICS])
    app[MEMORY] = MemoryGuard(client, settings)
    app[VECTORS] = VectorStore(app[STORE])
    app[ROUNDS] = RoundStore(app[STORE])
    app[AUDIT] = AuditLog(app[STORE], settings)
    logger.info("%s %s starting with %s", SERVICE_NAME, __version__, settings.public_dict())
    await _check_redis(app[STORE], settings)
    yield
    if redis is None:
        await client.aclose()


async def _check_redis(store: JobStore, settings: Settings) -> None:
    """Say at startup whether Redis answers (the service starts either way)."""
    try:
        await store.ping()
        logger.info("Redis reachable at %s", settings.redis_label)
    except StoreUnavailable as e:
        if isinstance(e.__cause__, AuthenticationError):
            logger.error(
                "Redis refused this service's credentials (%s): set REDIS_PASSWORD (or REDIS_PASSWORD_FILE) "
                "and REDIS_USERNAME for an ACL user, or put them in REDIS_URL; requests get 503 until then",
                e.__cause__,
            )
        else:
            logger.warning("Redis not reachable yet (%s); requests get 503 and /readyz fails until it is", e)


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = EventHub(app[REDIS], app[SETTINGS], channel=app[STORE].keys.events_channel)
    app[HUB] = hub
    async for _ in _background("event-listener", lambda app, stop: hub.run(stop))(app):
        yield


def _backends(app: web.Application, session: aiohttp.ClientSession) -> dict[str, Backend]:
    settings = app[SETTINGS]
    backends: dict[str, Backend] = {
        "none": NoneBackend(),
        "sum": VectorSumBackend("sum", app[VECTORS], app[OFFLOAD]),
        "secure-sum": VectorSumBackend("secure-sum", app[VECTORS], app[OFFLOAD], app[ROUNDS]),
    }
    if settings.smpc_coordinator_url:
        backends["smpc"] = SmpcBackend(session, settings)
    return backends


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """The aggregation and delivery workers, sharing one client session for every outbound call."""
    settings = app[SETTINGS]
    session = aiohttp.ClientSession()
    consumer = consumer_name()
    service = AggregationService(app[STORE], settings, _backends(app, session), consumer)
    deliveries = DeliveryService(app[STORE], settings, session, consumer)
    if settings.enable_api_sending and not settings.results_api_url:
        logger.warning("ENABLE_API_SENDING is on but RESULTS_API_URL is not set: results are not sent anywhere")
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(service.run(stop), name="aggregation"),
        asyncio.create_task(deliveries.run(stop), name="delivery"),
    ]
    yield
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()


async def _close_sockets(app: web.Application) -> None:
    await app[SOCKETS].close_all()


async def _close_offload(app: web.Application) -> None:
    app[OFFLOAD].close()
