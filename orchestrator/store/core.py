"""What every part of the JobStore shares: the Redis client, the key names, the deployment's constants,
the scripts, and the guard that turns Redis' failures into StoreUnavailable."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import scripts
from orchestrator.keys import Keys
from orchestrator.lua import LoadedScript, Script, Value
from orchestrator.metrics import Metrics
from orchestrator.models import KeyRequest, UpdateRequest, iso_ms
from orchestrator.refusals import REFUSALS, RefusalLog, refusal_code, said
from orchestrator.settings import Settings
from orchestrator.validation import schema_digest
from orchestrator.waits import note_failure, waited_recently

# A Redis key lives this much longer than the job TTL, so the janitor (which announces the expiry)
# normally gets there first.
KEY_TTL_GRACE_MS = 3600 * 1000

# What read_atomically runs: reads only.
_READS = frozenset({"HGET", "HGETALL", "HKEYS", "HMGET", "LRANGE"})

UNAVAILABLE_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, TimeoutError, OSError)


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer within the configured timeout."""


class StoreRefused(StoreUnavailable):
    """Redis answered but refused the command for a state of its own (out of memory, read-only, ...:
    orchestrator.refusals); ``code`` is the code it replied with."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def meaning(self) -> str:
        return REFUSALS[self.code]


def now_ms() -> int:
    return int(time.time() * 1000)


def new_instance_id() -> str:
    """A random id for the job instance a write may create: a jobId may come back once its job has expired,
    and what must never repeat (result idempotency keys, mask derivation) is bound to the instance."""
    return secrets.token_hex(16)


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def script_constants(settings: Settings) -> dict[str, Value]:
    """The deployment's constants the scripts have built in (a script's ``config``), from the settings."""
    return {
        "ttl": settings.job_ttl_seconds * 1000 + KEY_TTL_GRACE_MS,
        "history": settings.event_history,
        "channel": Keys(settings.key_prefix).events_channel,
        "window": int(settings.rate_limit_window_seconds * 1000),
        "audit_max": settings.audit_max_entries,
        "job_window": int(settings.job_creation_window_seconds * 1000),
        "client_jobs": settings.rate_limit_client_jobs,
        "ip_jobs": settings.rate_limit_ip_jobs,
    }


class StoreCore:
    def __init__(self, redis: aioredis.Redis, settings: Settings, *, metrics: Metrics) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.metrics = metrics
        self.job_ttl_ms = settings.job_ttl_seconds * 1000
        self.key_ttl_ms = self.job_ttl_ms + KEY_TTL_GRACE_MS
        self.collection_timeout_ms = settings.collection_timeout_seconds * 1000
        self.delivery_destinations = settings.delivery_destinations
        # What one call may wait for Redis (connections.create_redis): a request waits that long once.
        self.redis_timeout = settings.redis_timeout
        self.refusals = RefusalLog()
        self._constants = script_constants(settings)
        self._loaded: dict[str, LoadedScript] = {}

    def run(self, script: Script, *, keys: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
        """Run a script once (one EVALSHA) with its KEYS and ARGV by name; call it inside guard()."""
        loaded = self._loaded.get(script.name)
        if loaded is None:
            constants = {name: self._constants[name] for name in script.config}
            loaded = self._loaded[script.name] = script.register(self.redis, constants)
        return loaded(keys=keys, args=args)

    @asynccontextmanager
    async def guard(self, operation: str) -> AsyncIterator[None]:
        """Measure a Redis operation and turn unreachability into StoreUnavailable. The client's own
        timeouts (connections.create_redis) bound it in time: an asyncio.timeout here would cost as
        much as a sixth of an update's CPU. A request whose call waited out REDIS_TIMEOUT does not wait
        again (orchestrator.waits)."""
        if waited_recently(self.redis_timeout):
            raise StoreUnavailable(
                f"Redis unavailable during {operation}: this request already waited {self.redis_timeout:g} s for it"
            )
        started = time.perf_counter()
        try:
            yield
        except (*UNAVAILABLE_ERRORS, ResponseError) as e:
            refused = e if isinstance(e, (ResponseError, RedisConnectionError)) else None
            code = refusal_code(refused) if refused is not None else None
            if code is None and not isinstance(e, UNAVAILABLE_ERRORS):
                raise  # a script's own error, a wrong type: a bug, for the error middleware to log
            note_failure(time.perf_counter() - started, self.redis_timeout)
            self.metrics.redis_errors.labels(operation).inc()
            if refused is not None and code is not None:
                text = said(refused)
                self.refusals.refused(operation, code, text)
                raise StoreRefused(f"Redis refused {operation}: {text}", code) from e
            raise StoreUnavailable(f"Redis unavailable during {operation}: {e.__class__.__name__}: {e}") from e
        else:
            if self.refusals.active:
                self.refusals.accepted(operation)
        finally:
            self.metrics.observe_redis(operation, time.perf_counter() - started)

    async def read_atomically(self, *reads: tuple[str, str, *tuple[str | int, ...]]) -> list[Any]:
        """The replies of read commands, each (command, key, *arguments), run at one moment like a MULTI of
        them, but answered while Redis refuses writes (scripts.READ). Call it inside guard()."""
        keys: list[str] = []
        ops: list[str | int] = []
        for command, key, *rest in reads:
            if command not in _READS:
                raise ValueError(f"{command} is not one of the reads {sorted(_READS)}")
            keys.append(key)
            ops += [command, len(rest), *rest]
        return cast(list[Any], await self.run(scripts.READ, keys={"reads": keys}, args={"ops": ops}))

    def creation_args(self, req: UpdateRequest | KeyRequest, ms: int) -> dict[str, str | int]:
        """The ARGV of a write that may create its job (scripts.UPDATE, scripts.REGISTER_KEY), from its request."""
        return {
            "job_id": req.job_id,
            "client_id": req.client_id,
            "total": req.total_clients,
            "schema": req.schema_json or "",
            "deadline": ms + self.collection_timeout_ms if req.deadline_ms is None else req.deadline_ms,
            "vector_length": "" if req.vector_length is None else req.vector_length,
            "schema_digest": req.schema_digest or schema_digest(req.schema_json),
            "max_rows_declared": "1" if req.max_rows_declared else "",
            "creation_refusal": req.creation_refusal,
            "instance": new_instance_id(),
            "min_clients": req.total_clients if req.min_clients is None else req.min_clients,
            "min_clients_declared": "" if req.min_clients is None else "1",
        }

    def change_args(self) -> dict[str, str | int]:
        """The ARGV every state-changing script that announces an event takes (scripts.CHANGE)."""
        ms = now_ms()
        return {
            "now_ms": ms,
            "now_iso": iso_ms(ms) or "",
            "ttl": self.key_ttl_ms,
            "history": self.settings.event_history,
            "channel": self.keys.events_channel,
        }

    async def ping(self) -> None:
        async with self.guard("ping"):
            await self.redis.ping()

    def job_quota_counters(self, client: str | None, ip: str, ms: int) -> dict[str, str | None]:
        """The job-creation counters of this window that the scripts creating jobs count in (their
        ``client_jobs`` and ``ip_jobs`` KEYS): the client's and the IP's; none without a client (the service's
        own calls, tests), none for an unknown IP."""
        if client is None:
            return {"client_jobs": None, "ip_jobs": None}
        index = int(ms / 1000 // self.settings.job_creation_window_seconds)
        return {
            "client_jobs": self.keys.job_quota_counter("client", client, index),
            "ip_jobs": self.keys.job_quota_counter("ip", ip, index) if ip else None,
        }
