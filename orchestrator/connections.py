"""Creating the Redis client: a real server from a URL, or the embedded in-process fakeredis."""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.settings import Settings

logger = logging.getLogger(__name__)


def create_redis(settings: Settings) -> aioredis.Redis:
    """A client for ``settings.redis_url``, or an embedded fakeredis server when it is None."""
    if settings.redis_url is None:
        import fakeredis

        logger.warning(
            "No REDIS_URL set: using an embedded in-process fakeredis server. Nothing is persisted and "
            "only this one process can use it; set REDIS_URL for production."
        )
        return embedded_redis(fakeredis.FakeServer(), settings)
    # Every operation is bounded by these timeouts (pool wait, connect, each read): a hung Redis costs a
    # request REDIS_TIMEOUT, then a 503. One quick retry, on connection errors only, lets a pooled
    # connection broken by a Redis restart reconnect transparently. Timeouts are not retried: the
    # command may have run (our scripts would shrug off a second run, but the request would take twice
    # as long).
    # A blocking pool makes a burst wait for a free connection instead of failing with "Too many
    # connections"; the wait is bounded by the same timeout as every command.
    credentials: dict[str, Any] = {}
    if settings.redis_username is not None:
        credentials["username"] = settings.redis_username
    if settings.redis_password is not None:
        credentials["password"] = settings.redis_password
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        **credentials,
        decode_responses=True,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(RedisConnectionError,)),
        retry_on_error=[RedisConnectionError, ConnectionResetError],
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
    )
    return aioredis.Redis.from_pool(pool)


def embedded_redis(server: Any, settings: Settings) -> aioredis.Redis:
    """A client of an in-process fakeredis ``server`` with a blocking pool, like the real one: a burst
    waits for a connection instead of failing with "Too many connections"."""
    from fakeredis.aioredis import FakeAsyncRedisConnection

    pool = aioredis.BlockingConnectionPool(
        connection_class=FakeAsyncRedisConnection,
        server=server,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
        decode_responses=True,
    )
    return aioredis.Redis.from_pool(pool)
