"""create_app(): wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

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
from orchestrator.securesum.store import VectorStore
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

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = redis if redis is not None else create_redis(settings)
        app[REDIS] = client
        app[STORE] = JobStore(client, settings, metrics=app[METRICS])
        app[MEMORY] = MemoryGuard(
            client, fraction=settings.max_redis_memory_fraction, fallback_limit=settings.max_redis_memory_bytes
        )
        app[VECTORS] = VectorStore(app[STORE])
        app[AUDIT] = AuditLog(app[STORE], settings.audit_max_entries)
        logger.info("%s %s starting with %s", SERVICE_NAME, __version__, settings.public_dict())
        try:
            await app[STORE].ping()
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
        yield
        if redis is None:
            await client.aclose()

    async def janitor_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_janitor(app[STORE], settings.janitor_interval_seconds, stop), name="janitor")
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def memory_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(app[MEMORY].run(stop), name="memory-guard")
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
        hub = EventHub(
            app[REDIS],
            app[STORE].keys.events_channel,
            queue_size=settings.ws_queue_size,
            ping_interval=settings.pubsub_ping_seconds,
            liveness_timeout=settings.pubsub_liveness_seconds,
        )
        app[HUB] = hub
        stop = asyncio.Event()
        task = asyncio.create_task(hub.run(stop), name="event-listener")
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def aggregation_ctx(app: web.Application) -> AsyncIterator[None]:
        # One client session for every outbound call of this app.
        session = aiohttp.ClientSession()
        backends: dict[str, Backend] = {
            "none": NoneBackend(),
            "sum": VectorSumBackend("sum", app[VECTORS], app[OFFLOAD]),
            "secure-sum": VectorSumBackend("secure-sum", app[VECTORS], app[OFFLOAD]),
        }
        if settings.smpc_coordinator_url:
            backends["smpc"] = SmpcBackend(
                session,
                settings.smpc_coordinator_url,
                request_timeout=settings.smpc_request_timeout_seconds,
                poll_interval=settings.smpc_poll_interval_seconds,
                max_poll_interval=settings.smpc_poll_max_interval_seconds,
                callback_base=settings.public_base_url,
                max_result_bytes=settings.smpc_max_result_bytes,
            )
        consumer = consumer_name()
        service = AggregationService(app[STORE], settings, backends, consumer)
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

    async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_loop_lag(app[METRICS].loop_lag, stop), name="loop-lag")
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_sockets(app: web.Application) -> None:
        await app[SOCKETS].close_all()

    async def close_offload(app: web.Application) -> None:
        app[OFFLOAD].close()

    app[SOCKETS] = SocketRegistry()
    app.cleanup_ctx.append(loop_lag_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(janitor_ctx)
    app.cleanup_ctx.append(memory_ctx)
    app.cleanup_ctx.append(aggregation_ctx)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(close_offload)
    return app
