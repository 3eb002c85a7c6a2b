"""JobStore: every read and write of job state goes through here."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import scripts
from orchestrator.errors import JobNotFound
from orchestrator.keys import Keys
from orchestrator.metrics import Metrics
from orchestrator.models import (
    SUMMARY_FIELDS,
    Actor,
    Attempt,
    Job,
    JobStatus,
    UpdateOutcome,
    UpdateRequest,
    UpdateResult,
    iso_ms,
)
from orchestrator.refusals import REFUSALS, RefusalLog, refusal_code, said
from orchestrator.validation import schema_digest
from orchestrator.waits import note_failure, waited_recently

# A Redis key lives this much longer than the job TTL, so the janitor (which announces the expiry)
# normally gets there first.
_KEY_TTL_GRACE_MS = 3600 * 1000
_LIST_BATCH = 200
_EXPIRE_BATCH = 500

# What read_atomically runs: reads only.
_READS = frozenset({"HGET", "HGETALL", "HMGET", "LRANGE"})

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


_NOBODY = Actor()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_instance_id() -> str:
    """A random id for the job instance a write may create: a jobId may come back once its job has expired,
    and what must never repeat (result idempotency keys, mask derivation) is bound to the instance."""
    return secrets.token_hex(16)


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class JobStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        keys: Keys,
        metrics: Metrics,
        job_ttl_seconds: int,
        event_history: int,
        collection_timeout_seconds: int = 86400,
        delivery_destinations: tuple[str, ...] = (),
        rate_limits: tuple[float, int, int] = (10.0, 0, 0),
        audit_max_entries: int = 100_000,
        redis_timeout: float = 2.0,
        job_quotas: tuple[float, int, int] = (3600.0, 0, 0),
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.job_ttl_ms = job_ttl_seconds * 1000
        self.history_size = event_history
        self.collection_timeout_ms = collection_timeout_seconds * 1000
        self.delivery_destinations = delivery_destinations
        # (window seconds, writes per client, writes per IP; 0: no limit)
        self.rate_limits = rate_limits
        self.audit_max_entries = audit_max_entries
        # What one call may wait for Redis (connections.create_redis): a request waits that long once.
        self.redis_timeout = redis_timeout
        # (window seconds, jobs created per client, per IP; 0: no limit)
        self.job_quotas = job_quotas
        self.refusals = RefusalLog()
        self._update = redis.register_script(
            scripts.update_script(
                ttl_ms=self.job_ttl_ms + _KEY_TTL_GRACE_MS,
                history=event_history,
                channel=keys.events_channel,
                window_ms=int(rate_limits[0] * 1000),
                audit_max=audit_max_entries,
                job_quotas=(int(job_quotas[0] * 1000), job_quotas[1], job_quotas[2]),
            )
        )
        self._expire = redis.register_script(scripts.EXPIRE)
        self._read = redis.register_script(scripts.READ)
        self._finish = redis.register_script(scripts.FINISH)
        self._cancel = redis.register_script(scripts.CANCEL)
        self._start_attempt = redis.register_script(scripts.START_ATTEMPT)
        self._mark_triggered = redis.register_script(scripts.MARK_TRIGGERED)
        self._fail_collection = redis.register_script(scripts.FAIL_OVERDUE_COLLECTION)
        self._prepare_trigger = redis.register_script(scripts.PREPARE_TRIGGER)
        self._store_callback = redis.register_script(scripts.STORE_CALLBACK)
        self._delivery_update = redis.register_script(scripts.DELIVERY_UPDATE)
        self._delivery_retry = redis.register_script(scripts.DELIVERY_RETRY)

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
        args: list[str | int] = []
        for command, key, *rest in reads:
            if command not in _READS:
                raise ValueError(f"{command} is not one of the reads {sorted(_READS)}")
            keys.append(key)
            args += [command, len(rest), *rest]
        return cast(list[Any], await self._read(keys=keys, args=args))

    def _change_args(self) -> list[str | int]:
        """The ARGV tail every state-changing script takes: now (epoch ms), now (ISO), key TTL (ms),
        history size, events channel."""
        ms = now_ms()
        return [ms, iso_ms(ms) or "", self.job_ttl_ms + _KEY_TTL_GRACE_MS, self.history_size, self.keys.events_channel]

    async def ping(self) -> None:
        async with self.guard("ping"):
            await self.redis.ping()

    def job_quota_counters(self, client: str | None, ip: str, ms: int) -> list[str]:
        """The job-creation counters of this window that the scripts creating jobs count in: the client's
        and the IP's; none without a client (the service's own calls, tests), none for an unknown IP."""
        if client is None:
            return []
        index = int(ms / 1000 // self.job_quotas[0])
        counters = [self.keys.job_quota_counter("client", client, index)]
        if ip:
            counters.append(self.keys.job_quota_counter("ip", ip, index))
        return counters

    async def record_update(self, req: UpdateRequest, actor: Actor = _NOBODY) -> UpdateResult:
        """Count one client's completion; create the job on its first update; check the actor's rate limits
        and append the audit entry. One Redis round trip."""
        k = self.keys
        window, client_limit, ip_limit = self.rate_limits
        ms = now_ms()
        index = int(ms / 1000 // window)
        # Without an actor (the service's own calls, tests) nothing is limited.
        rate_client = (actor.client or req.client_id) if actor is not _NOBODY else None
        if rate_client is None:
            client_limit = 0
        quota_keys = self.job_quota_counters(rate_client, actor.ip, ms)
        async with self.guard("update"):
            raw = await self._update(
                keys=[
                    *k.job_keys(req.job_id),
                    k.jobs_by_created,
                    k.jobs_by_updated,
                    k.jobs_by_status(JobStatus.IN_PROGRESS),
                    k.jobs_by_status(JobStatus.AGGREGATING),
                    k.aggregation_queue,
                    k.jobs_by_deadline,
                    k.tombstone(req.job_id),
                    k.public_keys(req.job_id),
                    k.vectors(req.job_id),
                    k.rate_counter("client", rate_client or "-", index),
                    k.rate_counter("ip", actor.ip or "-", index),
                    k.audit,
                    *quota_keys,
                ],
                args=[
                    req.job_id,
                    req.client_id,
                    req.total_clients,
                    req.schema_json or "",
                    ms,
                    iso_ms(ms) or "",
                    req.deadline_ms if req.deadline_ms is not None else ms + self.collection_timeout_ms,
                    req.aggregation or "",
                    req.vector or b"",
                    "" if req.vector_length is None else req.vector_length,
                    "" if req.max_rows is None else req.max_rows,
                    req.schema_digest or schema_digest(req.schema_json),
                    "1" if req.max_rows_declared else "",
                    req.creation_refusal,
                    client_limit,
                    ip_limit if actor.ip else 0,
                    actor.who,
                    actor.role,
                    actor.ip,
                    new_instance_id(),
                ],
            )
        outcome, created, triggered, status, done, total, version, conflict = raw
        return UpdateResult(
            outcome=UpdateOutcome(outcome),
            created=bool(created),
            triggered=bool(triggered),
            status=JobStatus(status),
            done_count=int(done),
            total_clients=int(total),
            version=int(version),
            conflict_field=conflict or None,
        )

    async def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: Any = None,
        reason: str = "",
        attempt: int | None = None,
        aggregating_since: int | None = None,
    ) -> tuple[bool, int]:
        """Move an AGGREGATING job to COMPLETED (with its result) or FAILED (with a reason), announcing
        it; returns (whether this call did it, the job's version). Safe to call twice. With ``attempt``,
        only if that aggregation attempt still owns the job (fencing off a worker whose claim was taken
        over); with ``aggregating_since``, only if it has been aggregating since then or earlier."""
        if status not in (JobStatus.COMPLETED, JobStatus.FAILED):
            raise ValueError(f"a job finishes as COMPLETED or FAILED, not {status.value}")
        k = self.keys
        result_json = "" if result is None else json.dumps(result, separators=(",", ":"), allow_nan=False)
        async with self.guard("finish"):
            done, version = await self._finish(
                keys=[
                    k.job(job_id),
                    k.events(job_id),
                    k.jobs_by_status(JobStatus.AGGREGATING),
                    k.jobs_by_status(status),
                    k.jobs_by_updated,
                    k.updated_clients(job_id),
                    k.client_times(job_id),
                    k.deliveries(job_id),
                    k.delivery_queue,
                    k.vectors(job_id),
                ],
                args=[
                    job_id,
                    status.value,
                    result_json,
                    reason,
                    *self._change_args(),
                    "" if attempt is None else attempt,
                    "" if aggregating_since is None else aggregating_since,
                    ",".join(self.delivery_destinations),
                ],
            )
        return bool(done), int(version)

    async def cancel_job(self, job_id: str, reason: str) -> tuple[str, JobStatus | None, int]:
        """Cancel a job that has not finished, announcing it; returns (outcome, status, version) with
        outcome 'cancelled', 'already', 'finished' (refused) or 'missing'. Safe to call twice."""
        k = self.keys
        async with self.guard("cancel"):
            outcome, status, version = await self._cancel(
                keys=[
                    k.job(job_id),
                    k.events(job_id),
                    k.jobs_by_status(JobStatus.IN_PROGRESS),
                    k.jobs_by_status(JobStatus.AGGREGATING),
                    k.jobs_by_status(JobStatus.CANCELLED),
                    k.jobs_by_updated,
                    k.updated_clients(job_id),
                    k.client_times(job_id),
                    k.jobs_by_deadline,
                    k.vectors(job_id),
                ],
                args=[
                    job_id,
                    reason,
                    *self._change_args(),
                ],
            )
        return str(outcome), JobStatus(status) if status else None, int(version)

    async def start_attempt(self, job_id: str, worker: str) -> Attempt | None:
        """Take the job's aggregation over (a new attempt, fencing off the earlier ones), or None when
        the job is no longer AGGREGATING."""
        async with self.guard("start_attempt"):
            raw = await self._start_attempt(
                keys=[self.keys.job(job_id), self.keys.updated_clients(job_id)], args=[worker, now_ms()]
            )
        if not raw or not int(raw[0]):
            return None
        _, number, aggregating_at, triggered, backend, schema, *clients = raw
        return Attempt(
            job_id=job_id,
            number=int(number),
            aggregating_at_ms=int(aggregating_at),
            triggered=bool(triggered),
            backend=backend or None,
            schema_json=schema or "",
            clients=sorted(clients),
        )

    async def mark_triggered(self, attempt: Attempt) -> bool:
        """Record that the coordinator has the job; False if the attempt no longer owns it."""
        async with self.guard("mark_triggered"):
            done = await self._mark_triggered(keys=[self.keys.job(attempt.job_id)], args=[attempt.number, now_ms()])
        return bool(done)

    async def prepare_trigger(self, attempt: Attempt, token: str) -> tuple[str, bool] | None:
        """Before triggering an external aggregator: the callback token to give it, and whether an earlier
        attempt got this far (so may have triggered it already); None if the attempt no longer owns the job."""
        async with self.guard("callback"):
            outcome, kept = await self._prepare_trigger(
                keys=[self.keys.job(attempt.job_id)], args=[attempt.number, token]
            )
        return None if int(outcome) == 0 else (str(kept), int(outcome) == 2)

    async def store_callback(self, job_id: str, token: str, result: dict[str, Any]) -> int:
        """Keep a coordinator's pushed result: 1 stored, 0 the job is not aggregating, -1 wrong token."""
        async with self.guard("callback"):
            return int(
                await self._store_callback(
                    keys=[self.keys.job(job_id)], args=[token, json.dumps(result, allow_nan=False)]
                )
            )

    async def callback_result(self, job_id: str) -> dict[str, Any] | None:
        async with self.guard("callback"):
            raw = await self.redis.hget(self.keys.job(job_id), "coordinatorResult")
        return json.loads(raw) if raw else None

    async def overdue_collections(self, *, now: int | None = None, limit: int = 500) -> list[str]:
        """Jobs still collecting clients whose collection deadline has passed."""
        ms = now_ms() if now is None else now
        async with self.guard("overdue"):
            return cast(
                list[str], await self.redis.zrangebyscore(self.keys.jobs_by_deadline, "-inf", ms, start=0, num=limit)
            )

    async def fail_overdue_collection(self, job_id: str) -> bool:
        """Fail a job whose collection deadline passed, naming the clients that reported."""
        k = self.keys
        async with self.guard("fail_overdue"):
            done, _ = await self._fail_collection(
                keys=[
                    k.job(job_id),
                    k.events(job_id),
                    k.jobs_by_status(JobStatus.IN_PROGRESS),
                    k.jobs_by_status(JobStatus.FAILED),
                    k.jobs_by_updated,
                    k.updated_clients(job_id),
                    k.client_times(job_id),
                    k.jobs_by_deadline,
                    k.vectors(job_id),
                ],
                args=[job_id, "Collection deadline passed", *self._change_args()],
            )
        return bool(done)

    async def aggregating_since(self, *, limit: int = 1000) -> dict[str, int]:
        """The AGGREGATING jobs (up to ``limit``) with the time each started aggregating (epoch ms)."""
        async with self.guard("aggregating"):
            ids = cast(
                list[str], await self.redis.zrange(self.keys.jobs_by_status(JobStatus.AGGREGATING), 0, limit - 1)
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(self.keys.job(job_id), "aggregatingAt")
                times = await pipe.execute()
        return {job_id: int(t) for job_id, t in zip(ids, times, strict=True) if t}

    async def get_job(self, job_id: str) -> Job:
        """The job with its clients and the time each reported; JobNotFound if there is none."""
        async with self.guard("get_job"):
            raw, times, deliveries = map(
                pairs,
                await self.read_atomically(
                    ("HGETALL", self.keys.job(job_id)),
                    ("HGETALL", self.keys.client_times(job_id)),
                    ("HGETALL", self.keys.deliveries(job_id)),
                ),
            )
        if not raw:
            raise JobNotFound(job_id)
        job = Job.from_redis(raw, times)
        job.deliveries = {name: json.loads(record) for name, record in deliveries.items()}
        return job

    async def delivery(self, job_id: str, destination: str) -> dict[str, Any] | None:
        async with self.guard("delivery"):
            raw = await self.redis.hget(self.keys.deliveries(job_id), destination)
        return json.loads(raw) if raw else None

    async def record_delivery(
        self,
        job_id: str,
        destination: str,
        record: dict[str, Any],
        *,
        event: str = "",
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Store a delivery's state; with ``event`` (delivery.succeeded / delivery.failed) also announce it."""
        members = json.dumps({"destination": destination, **(details or {})}, separators=(",", ":"))[1:-1]
        k = self.keys
        ms = now_ms()
        async with self.guard("delivery"):
            done = await self._delivery_update(
                keys=[k.job(job_id), k.events(job_id), k.deliveries(job_id)],
                args=[
                    job_id,
                    destination,
                    json.dumps(record, separators=(",", ":")),
                    event,
                    members,
                    ms,
                    iso_ms(ms) or "",
                    self.job_ttl_ms + _KEY_TTL_GRACE_MS,
                    self.history_size,
                    k.events_channel,
                ],
            )
        return bool(done)

    async def retry_deliveries(self, job_id: str) -> list[str] | None:
        """Queue again the job's dead-lettered deliveries; None if the job is not COMPLETED."""
        k = self.keys
        async with self.guard("delivery"):
            queued = await self._delivery_retry(
                keys=[k.job(job_id), k.deliveries(job_id), k.delivery_queue], args=[job_id]
            )
        return None if queued == ["-1"] else [str(q) for q in queued]

    async def list_jobs(
        self, *, status: JobStatus | None, limit: int, cursor: tuple[int, str] | None
    ) -> tuple[list[Job], tuple[int, str] | None]:
        """Jobs newest first, ``limit`` at a time, with their summary fields only (Job.summary_from_redis); the
        cursor is (createdAt ms, jobId) of the last one seen."""
        index = self.keys.jobs_by_status(status) if status else self.keys.jobs_by_created
        picked: list[tuple[str, int]] = []
        async with self.guard("list_jobs"):
            max_score: str = str(cursor[0]) if cursor else "+inf"
            offset = 0
            while len(picked) <= limit:
                batch = cast(
                    list[tuple[str, float]],
                    await self.redis.zrevrangebyscore(
                        index, max_score, "-inf", start=offset, num=_LIST_BATCH, withscores=True
                    ),
                )
                if not batch:
                    break
                offset += len(batch)
                for member, score in batch:
                    # Equal scores come in descending member order: skip up to and including the cursor.
                    if cursor and int(score) == cursor[0] and member >= cursor[1]:
                        continue
                    picked.append((member, int(score)))
            page, more = picked[:limit], len(picked) > limit
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _ in page:
                    pipe.hmget(self.keys.job(job_id), SUMMARY_FIELDS)
                rows: list[list[str | None]] = await pipe.execute()
        # An expired job may linger in an index until the janitor passes, and a job whose keys a Redis TTL
        # removed may have come back under the same id in another status: leave both out.
        summaries = (Job.summary_from_redis(row) for row in rows)
        jobs = [job for job in summaries if job is not None and (status is None or job.status is status)]
        next_cursor = (page[-1][1], page[-1][0]) if more and page else None
        return jobs, next_cursor

    async def job_summary(self, job_id: str) -> Job | None:
        """The job with its summary fields only (no schema, result or clients), or None if there is none."""
        async with self.guard("job_summary"):
            row = cast(list[str | None], await self.redis.hmget(self.keys.job(job_id), SUMMARY_FIELDS))
        return Job.summary_from_redis(row)

    async def count_by_status(self) -> dict[JobStatus, int]:
        async with self.guard("count_by_status"), self.redis.pipeline(transaction=False) as pipe:
            for status in JobStatus:
                pipe.zcard(self.keys.jobs_by_status(status))
            counts = await pipe.execute()
        return dict(zip(JobStatus, (int(c) for c in counts), strict=True))

    async def expire_stale(self, *, now: int | None = None) -> tuple[list[str], bool]:
        """Expire (a batch of) the jobs unchanged for longer than the TTL, announcing each; returns their
        ids and whether more may be waiting."""
        ms = now_ms() if now is None else now
        cutoff = ms - self.job_ttl_ms
        expired: list[str] = []
        async with self.guard("expire"):
            stale = cast(
                list[str],
                await self.redis.zrangebyscore(self.keys.jobs_by_updated, "-inf", cutoff, start=0, num=_EXPIRE_BATCH),
            )
        for job_id in stale:
            async with self.guard("expire"):
                done = await self._expire(
                    keys=[
                        *self.keys.job_keys(job_id),
                        self.keys.tombstone(job_id),
                        self.keys.deliveries(job_id),
                        self.keys.public_keys(job_id),
                        self.keys.vectors(job_id),
                        self.keys.jobs_by_created,
                        self.keys.jobs_by_updated,
                        self.keys.jobs_by_deadline,
                        *self.keys.status_indexes(),
                    ],
                    args=[job_id, cutoff, iso_ms(ms) or "", self.keys.events_channel, self.job_ttl_ms],
                )
            if done:
                expired.append(job_id)
        return expired, len(stale) == _EXPIRE_BATCH

    async def events_since(self, job_id: str, since: int) -> list[tuple[int, str]] | None:
        """The job's events after version ``since`` as (version, JSON text), oldest first; None when
        the retained history no longer reaches back that far (the caller then needs a snapshot)."""
        async with self.guard("events"):
            current, raw = await self.read_atomically(
                ("HGET", self.keys.job(job_id), "version"), ("LRANGE", self.keys.events(job_id), 0, -1)
            )
        if current is None or since > int(current):
            return None
        events = [(int(json.loads(item)["version"]), item) for item in raw]
        missed = [(v, item) for v, item in events if v > since]
        if int(current) > since and (not missed or missed[0][0] != since + 1):
            return None
        return missed

    async def is_participant(self, job_id: str, client_id: str) -> bool:
        """Whether the client has reported for the job or registered a key for it."""
        async with self.guard("participant"), self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self.keys.updated_clients(job_id), client_id)
            pipe.hexists(self.keys.public_keys(job_id), client_id)
            reported, keyed = await pipe.execute()
        return bool(reported) or bool(keyed)

    async def store_ticket(self, ticket: str, payload: str, ttl_seconds: float) -> None:
        async with self.guard("ticket"):
            await self.redis.set(self.keys.ws_ticket(ticket), payload, px=int(ttl_seconds * 1000))

    async def redeem_ticket(self, ticket: str) -> str | None:
        """The ticket's payload, once: GETDEL makes it single-use across replicas."""
        if not 16 <= len(ticket) <= 64:
            return None
        async with self.guard("ticket"):
            return cast(str | None, await self.redis.getdel(self.keys.ws_ticket(ticket)))

    async def find_job(self, job_id: str) -> Job | None:
        try:
            return await self.get_job(job_id)
        except JobNotFound:
            return None

    async def event_history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's retained events, oldest first."""
        async with self.guard("events"):
            raw = await self.redis.lrange(self.keys.events(job_id), 0, -1)
        return [json.loads(item) for item in raw]
