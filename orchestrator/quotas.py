"""Quotas on what clients may make the service keep: bytes per job, and new jobs while Redis is nearly full.

Jobs created per client (and per IP) per window are counted by the scripts that create jobs (UPDATE,
REGISTER_KEY), so every replica shares the counters and a quota is exact. What is checked here is passed
to those scripts as the request's creation refusal: the script applies it only if the request would
create the job, in the same atomic step, so an update of an existing job is never refused by it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from orchestrator.aio import pause
from orchestrator.errors import ApiError, DomainError, ValidationError
from orchestrator.models import KeyRequest, UpdateRequest
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)

# What a job keeps per client besides its vector, at most: its id (up to 128 bytes) in the reported set,
# the report times and the public keys, its report time and its public key, and Redis' per-entry overhead.
CLIENT_BYTES = 512

R = TypeVar("R", UpdateRequest, KeyRequest)


def job_bytes(schema_json: str | None, total_clients: int, vector_length: int | None) -> int:
    """The most a job of this shape keeps: its schema, and per client its bookkeeping and its vector."""
    return len(schema_json or "") + total_clients * (CLIENT_BYTES + 8 * (vector_length or 0))


class MemoryGuard:
    """Redis' memory as last sampled (INFO memory, every ``interval`` seconds, by one task per replica):
    new jobs are refused while used_memory is at or above ``fraction`` of the limit (Redis' maxmemory, or
    ``fallback_limit`` when Redis has none), or when a new job would take it there."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, *, interval: float = 1.0) -> None:
        self.redis = redis
        self.fraction = settings.max_redis_memory_fraction
        self.fallback_limit = settings.max_redis_memory_bytes
        self.interval = interval
        self.used = 0
        self.limit = 0
        self._told: set[str] = set()  # what has been said about this Redis' configuration (once each)

    @property
    def threshold(self) -> int:
        """used_memory at which new jobs are refused (0: the guard is off)."""
        return int(self.limit * self.fraction) if self.fraction > 0 else 0

    @property
    def full(self) -> bool:
        return 0 < self.threshold <= self.used

    def headroom(self) -> int | None:
        """Bytes Redis may still take below the threshold (None: no limit)."""
        return self.threshold - self.used if self.threshold else None

    def charge(self, req: UpdateRequest | KeyRequest) -> None:
        """Count a job this replica just created until the next sample shows what it really took: a client
        creating jobs fast is then stopped at the threshold, not a sampling interval's worth past it. Counted
        with the allocator's rounding (jemalloc's size classes hold up to a quarter more than asked for)."""
        if self.threshold:
            size = job_bytes(req.schema_json, req.total_clients, req.vector_length)
            self.observe(self.used + size * 5 // 4, self.limit)

    def observe(self, used: int, maxmemory: int) -> None:
        was_full = self.full
        self.used, self.limit = used, maxmemory or self.fallback_limit
        if self.full != was_full:
            log = logger.warning if self.full else logger.info
            log(
                "Redis memory %d of %d bytes (MAX_REDIS_MEMORY_FRACTION=%g): %s",
                self.used,
                self.limit,
                self.fraction,
                "new jobs are refused (507) until it falls back" if self.full else "new jobs are accepted again",
            )

    async def sample(self) -> bool:
        """Read Redis' memory figures; False when this Redis cannot report them (then the guard stays off)."""
        try:
            info = await self.redis.info("memory")
        except ResponseError as e:
            logger.info("Redis does not report its memory (INFO: %s): MAX_REDIS_MEMORY_FRACTION has no effect", e)
            return False
        self.observe(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
        self._check_configuration(str(info.get("maxmemory_policy", "noeviction")))
        return True

    def _check_configuration(self, policy: str) -> None:
        """Say once what leaves Redis unguarded: no limit to guard, or a policy that evicts jobs."""
        if not self.limit and "unlimited" not in self._told:
            self._told.add("unlimited")
            logger.warning(
                "Redis has no maxmemory and MAX_REDIS_MEMORY_BYTES is not set: the memory guard is off, and the "
                "job quotas alone may let clients fill Redis. Give Redis a maxmemory (with maxmemory-policy "
                "noeviction) or set MAX_REDIS_MEMORY_BYTES"
            )
        if self.limit and policy != "noeviction" and "policy" not in self._told:
            self._told.add("policy")
            logger.warning(
                "Redis' maxmemory-policy is %s: when it is full it evicts keys, which are jobs and their "
                "results here; use noeviction (then writes are refused with 503 and nothing stored is lost)",
                policy,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set (not at all when the guard is off)."""
        if self.fraction <= 0:
            return
        while not stop.is_set():
            try:
                if not await self.sample():
                    return
            except (RedisError, OSError) as e:  # unreachable: requests say so themselves; keep the last figures
                logger.debug("Redis memory not sampled: %s", e)
            except Exception:
                logger.exception("Redis memory sampling failed")
            await pause(stop, self.interval)


def with_creation_quotas(
    req: R, layout_error: DomainError | None, settings: Settings, memory: MemoryGuard
) -> tuple[R, DomainError | None]:
    """``req`` with the reason it may not create its job, and the error for it: the layout's own (overflow
    risk), a job larger than MAX_JOB_BYTES, or Redis (nearly) full. The scripts apply it only to a request
    that would create the job; ``job_too_large`` also refuses a schema sent later to a job that had none."""
    error = layout_error
    if error is None:
        size = job_bytes(req.schema_json, req.total_clients, req.vector_length)
        if size > settings.max_job_bytes:
            error = job_too_large(req, size, settings.max_job_bytes)
        else:
            headroom = memory.headroom()
            if memory.full or (headroom is not None and size > headroom):
                error = storage_full(memory, size, settings)
    if error is None:
        return req, None
    return replace(req, creation_refusal=error.code), error


def job_too_large(req: UpdateRequest | KeyRequest, size: int, limit: int) -> ValidationError:
    vectors = f" and {8 * req.vector_length} bytes of vector" if req.vector_length else ""
    return ValidationError(
        f"A job of {req.total_clients} clients (with {CLIENT_BYTES} bytes of bookkeeping{vectors} each) and a "
        f"schema of {len(req.schema_json or '')} bytes would keep {size} bytes; this service keeps at most "
        f"MAX_JOB_BYTES={limit} per job",
        code="job_too_large",
        field="schema",
        jobBytes=size,
        maxJobBytes=limit,
    )


def storage_full(memory: MemoryGuard, size: int, settings: Settings) -> ApiError:
    # Memory comes back as jobs expire, which the janitor does at its own pace.
    retry_after = max(settings.retry_after_seconds, min(int(settings.janitor_interval_seconds), 3600))
    return ApiError(
        f"Redis is too full to take a new job ({memory.used} of {memory.limit} bytes used; new jobs stop at "
        f"MAX_REDIS_MEMORY_FRACTION={memory.fraction:g}, and this one may keep {size} bytes). Updates of existing "
        "jobs still work; retry later",
        code="storage_full",
        http_status=507,
        headers={"Retry-After": str(retry_after)},
        retryAfter=retry_after,
    )


def job_quota_exceeded(wait_seconds: float, settings: Settings) -> ApiError:
    retry_after = max(1, int(wait_seconds + 0.999))
    return ApiError(
        f"Too many new jobs: a client may create {settings.rate_limit_client_jobs} (an IP "
        f"{settings.rate_limit_ip_jobs}) per {settings.job_creation_window_seconds:g} s; retry in {retry_after} s",
        code="job_quota_exceeded",
        http_status=429,
        headers={"Retry-After": str(retry_after)},
        retryAfter=retry_after,
    )
