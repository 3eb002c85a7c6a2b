"""Domain types: job status, validated requests, the job as read from Redis."""

from __future__ import annotations

import enum
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.wire.features import Feature, stored_features


class JobStatus(enum.StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    AGGREGATING = "AGGREGATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class UpdateOutcome(enum.StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    CLOSED = "closed"
    REFUSED = "refused"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"


# Backends whose clients send statistics vectors that the service sums itself.
AGGREGATION_BACKENDS = frozenset({"smpc", "none", "secure-sum", "sum"})
VECTOR_BACKENDS = frozenset({"secure-sum", "sum"})


@dataclass(frozen=True)
class UpdateRequest:
    job_id: str
    client_id: str
    total_clients: int
    # Canonical JSON of the schema (sorted keys, compact) or None when the update has none.
    schema_json: str | None
    # When the job must have all its clients (epoch ms), if the update says; else the default applies.
    deadline_ms: int | None = None
    # The aggregation backend the update asks for, if any.
    aggregation: str | None = None
    # The client's statistics vector (little-endian uint64 bytes), for the summed-vector backends.
    vector: bytes | None = None
    # The vector layout of a summed-vector job this update may create: its length, and the most rows a
    # client may count (which, with the schema's bounds, rules out overflow).
    vector_length: int | None = None
    max_rows: int | None = None
    max_rows_declared: bool = False
    # Why this update may not create its job (overflow_risk, job_too_large, storage_full), checked only if it
    # would (job_too_large also when it would store its schema in a job that has none).
    creation_refusal: str = ""
    # SHA-1 of schema_json, what the scripts compare schemas by: computed where the body is parsed (a worker
    # process, for a large one); '' when there is no schema or nobody computed it (the store then does).
    schema_digest: str = ""
    # k of n: how many clients' reports the job needs at its deadline (None: totalClients, or as stored).
    min_clients: int | None = None


@dataclass(frozen=True)
class KeyRequest:
    """A client's public key for a secure-sum job; the first one creates the job."""

    job_id: str
    client_id: str
    total_clients: int
    schema_json: str | None
    public_key: str  # canonical base64 of the raw 32-byte X25519 key, validated
    # As declared until the backend's layout step (securesum/vectors.py) gives it the default.
    max_rows: int | None = None
    vector_length: int | None = None
    deadline_ms: int | None = None
    max_rows_declared: bool = False
    creation_refusal: str = ""
    schema_digest: str = ""
    # The second X25519 key (canonical base64): peers encrypt their shares for this client to it.
    encryption_key: str = ""
    # The threshold k of the secure sum (None: as stored; totalClients for a new job) and each round's timeout.
    min_clients: int | None = None
    round_timeout_ms: int | None = None


@dataclass(frozen=True)
class KeyResult:
    outcome: str  # registered | duplicate | replaced | conflict | closed | refused
    created: bool
    key_count: int
    total_clients: int
    version: int
    status: str
    detail: str | None
    instance_id: str = ""


@dataclass(frozen=True)
class Actor:
    """Who sends a write, for its rate limits and its audit entry."""

    who: str = "anonymous"
    role: str = ""
    ip: str = ""
    # The client whose rate limit applies (the token's subject, or the clientId without authentication).
    client: str | None = None


@dataclass(frozen=True)
class UpdateResult:
    outcome: UpdateOutcome
    created: bool
    triggered: bool
    status: JobStatus
    done_count: int
    total_clients: int
    version: int
    conflict_field: str | None = None


@dataclass(frozen=True)
class ClientReport:
    client_id: str
    reported_at_ms: int


# What a job's summary (serializers.job_summary) shows: all that listings and the /ws snapshot read of a job,
# never its schema or result, which may be megabytes.
SUMMARY_FIELDS = ("jobId", "status", "totalClients", "doneCount", "createdAt", "updatedAt", "version")


@dataclass
class Job:
    job_id: str
    status: JobStatus
    total_clients: int
    done_count: int
    # The schema as stored (canonical JSON; None for none): served as it is, parsed only when needed, since a
    # schema may be megabytes.
    schema_json: str | None
    final_result: Any
    created_at_ms: int
    updated_at_ms: int
    version: int
    failure_reason: str | None = None
    aggregating_at_ms: int | None = None
    completed_at_ms: int | None = None
    clients: list[ClientReport] = field(default_factory=list)
    deliveries: dict[str, Any] = field(default_factory=dict)
    aggregation: str | None = None
    max_rows: int | None = None
    key_count: int = 0
    # Random per job instance ('' for a job stored before instances existed).
    instance_id: str = ""
    # k of n, and when collection (a secure sum: its keys round) closes.
    min_clients: int = 0
    deadline_at_ms: int | None = None
    closed_by: str | None = None
    # A secure sum's rounds: the one in progress (keys, shares, inputs, unmask, done), when it closes, and
    # who took part in each: U1 (key registrants), U2 (share posters), the unmask answers; the dropped.
    round: str | None = None
    round_deadline_ms: int | None = None
    participants: list[str] = field(default_factory=list)
    sharers: list[str] = field(default_factory=list)
    unmasked: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_redis(cls, raw: dict[str, str], client_times: dict[str, str] | None = None) -> Job:
        reports = []
        for cid, value in (client_times or {}).items():
            ms, _, ordinal = value.partition(":")
            reports.append((int(ordinal or 0), ClientReport(cid, int(ms))))
        clients = [report for _, report in sorted(reports, key=lambda r: (r[0], r[1].reported_at_ms))]
        return cls(
            job_id=raw["jobId"],
            status=JobStatus(raw.get("status", JobStatus.IN_PROGRESS.value)),
            total_clients=int(raw["totalClients"]),
            done_count=int(raw.get("doneCount", 0)),
            schema_json=raw.get("schema") or None,
            final_result=_json_or_none(raw.get("finalResult")),
            created_at_ms=int(raw.get("createdAt", 0)),
            updated_at_ms=int(raw.get("updatedAt", 0)),
            version=int(raw.get("version", 0)),
            failure_reason=raw.get("failureReason") or None,
            aggregating_at_ms=_int_or_none(raw.get("aggregatingAt")),
            completed_at_ms=_int_or_none(raw.get("completedAt")),
            clients=clients,
            aggregation=raw.get("aggregation") or None,
            max_rows=_int_or_none(raw.get("maxRows")),
            key_count=int(raw.get("keyCount") or 0),
            instance_id=raw.get("instance") or "",
            min_clients=int(raw.get("minClients") or raw["totalClients"]),
            deadline_at_ms=_int_or_none(raw.get("deadlineAt")),
            closed_by=raw.get("closedBy") or None,
            round=raw.get("round") or None,
            round_deadline_ms=_int_or_none(raw.get("roundDeadlineAt")) or None,
        )

    @classmethod
    def summary_from_redis(cls, values: list[str | None]) -> Job | None:
        """A job with its SUMMARY_FIELDS only (as HMGET returns them), or None if it has none."""
        raw = {name: value for name, value in zip(SUMMARY_FIELDS, values, strict=True) if value is not None}
        return cls.from_redis(raw) if "jobId" in raw and "totalClients" in raw else None

    @functools.cached_property
    def schema(self) -> list[dict[str, Any]] | None:
        return json.loads(self.schema_json) if self.schema_json else None

    @property
    def percentage(self) -> float:
        return round(100.0 * self.done_count / self.total_clients, 2) if self.total_clients else 0.0


_second_cache: tuple[int, str] = (-1, "")


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC timestamp, e.g. 2026-11-29T10:00:00.123Z. Every update and
    read formats one, so the seconds part is cached."""
    global _second_cache
    if ms is None:
        return None
    second, millis = divmod(ms, 1000)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{millis:03d}Z"


def _json_or_none(raw: str | None) -> Any:
    if not raw:
        return None
    return json.loads(raw)


def _int_or_none(raw: str | None) -> int | None:
    return int(raw) if raw else None


@dataclass(frozen=True)
class Attempt:
    """An aggregation attempt a worker owns, with what it needs from the job."""

    job_id: str
    number: int
    aggregating_at_ms: int
    triggered: bool
    backend: str | None
    # The job's schema as stored (canonical JSON, '' for none): parsed only by what needs it, since a schema
    # may be megabytes (the summed-vector backends lay it out in a worker process).
    schema_json: str
    # The contributors: the clients whose data the aggregate holds (every reporter; U3 of a secure sum).
    clients: list[str]
    total_clients: int = 0
    # Clients known by id that are not contributors (a secure sum's key registrants that dropped out).
    missing: list[str] = field(default_factory=list)

    @property
    def features(self) -> tuple[Feature, ...]:
        """The job's schema, read once per job (per process); () for none."""
        return stored_features(self.schema_json) if self.schema_json else ()
