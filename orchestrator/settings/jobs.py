"""The settings of what the service does with jobs: Redis, quotas, aggregation, results; each declared once."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.models import AGGREGATION_BACKENDS
from orchestrator.settings.declare import BASE_URL, BOOL, FORMATS, HEADERS, URL, option, setting

_DAY = 86400

# The original's settings: read only to build REDIS_URL / SMPC_COORDINATOR_URL when those are not set.
REDIS_HOST = option("REDIS_HOST", "localhost", "the original's Redis host, used when `REDIS_URL` is not set")
REDIS_PORT = option(
    "REDIS_PORT", 6379, "the original's Redis port, used when `REDIS_URL` is not set", low=1, high=65535
)
COORDINATOR_HOST = option(
    "COORDINATOR_HOST", None, "the original's coordinator host, used when `SMPC_COORDINATOR_URL` is not set"
)
COORDINATOR_PORT = option(
    "COORDINATOR_PORT", 80, "the original's coordinator port, with `COORDINATOR_HOST`", low=1, high=65535
)


@dataclass(frozen=True)
class RedisSettings:
    """Redis"""

    redis_url: str | None = setting(
        "REDIS_URL",
        None,
        "`redis://`, `rediss://` (TLS) or `unix://` URL, with password/ACL user if needed "
        "(`redis://user:pass@host:6379/0`); wins over `REDIS_HOST`/`REDIS_PORT`; with neither, the embedded "
        "in-process fakeredis (not persisted) is used",
        secret=True,
    )
    redis_username: str | None = setting("REDIS_USERNAME", None, "Redis ACL user (or in `REDIS_URL`)")
    redis_password: str | None = setting("REDIS_PASSWORD", None, "Redis password (or in `REDIS_URL`)", secret=True)
    redis_timeout: float = setting(
        "REDIS_TIMEOUT",
        2.0,
        "seconds a Redis operation may take before the request gets `503`; a request waits for a hung Redis once, "
        "not once per operation. Idle queue readers block for half of it (at most 1 s), so any value works",
        low=0,
        above=True,
        high=60,
    )
    redis_max_connections: int = setting(
        "REDIS_MAX_CONNECTIONS", 64, "connection pool size per process", low=1, high=10000
    )
    key_prefix: str = setting(
        "KEY_PREFIX", "", "prefix for every Redis key and channel (to share a Redis between deployments or tests)"
    )
    # Without Redis' maxmemory, the fraction applies to MAX_REDIS_MEMORY_BYTES.
    max_redis_memory_fraction: float = setting(
        "MAX_REDIS_MEMORY_FRACTION",
        0.9,
        "new jobs get `507 storage_full` while Redis' `used_memory` is at or above this fraction of its `maxmemory`",
        unit="a fraction",
        low=0,
        high=1,
        note="0: off",
    )
    max_redis_memory_bytes: int = setting(
        "MAX_REDIS_MEMORY_BYTES",
        0,
        "the limit the fraction applies to when Redis has no `maxmemory` (`0`: none)",
        unit="bytes",
        low=0,
    )
    pubsub_ping_seconds: float = setting(
        "PUBSUB_PING_SECONDS", 5.0, "how often the event listener pings Redis", low=0.1, high=300
    )
    pubsub_liveness_seconds: float = setting(
        "PUBSUB_LIVENESS_SECONDS",
        15.0,
        "the event listener reconnects when it hears nothing from Redis for this long",
        low=0.5,
        high=3600,
    )


@dataclass(frozen=True)
class JobSettings:
    """Jobs and quotas"""

    job_ttl_seconds: int = setting(
        "JOB_TTL_SECONDS", 7 * _DAY, "seconds after its last change by which a job is expired (7 days)", low=60
    )
    event_history: int = setting("EVENT_HISTORY", 200, "events kept per job", low=1, high=100_000)
    vector_max_rows: int = setting(
        "VECTOR_MAX_ROWS",
        1_000_000,
        "`maxRows` of a sum/secure-sum job that does not declare one",
        low=1,
        high=10**12,
        wording="an integer 1-10^12",
    )
    # Checked when the job is created (quotas.job_bytes).
    max_job_bytes: int = setting(
        "MAX_JOB_BYTES",
        2 * 1024**3,
        "most Redis memory one job may take: schema + `totalClients x (512 + 8 x vector length)`; larger jobs are "
        "refused (`400 job_too_large`; see **Quotas**)",
        unit="bytes",
        low=1024,
        high=1 << 40,
        aliases=("MAX_JOB_VECTOR_BYTES",),  # its name when it counted only vectors
    )
    job_creation_window_seconds: float = setting(
        "JOB_CREATION_WINDOW", 3600.0, "seconds of a job-quota window", low=1, high=7 * _DAY
    )
    # Per client: its token's subject, or its clientId without auth.
    rate_limit_client_jobs: int = setting(
        "RATE_LIMIT_CLIENT_JOBS",
        1000,
        "jobs a client may create per `JOB_CREATION_WINDOW` (`0`: no limit); more get `429 job_quota_exceeded`",
        low=0,
    )
    rate_limit_ip_jobs: int = setting(
        "RATE_LIMIT_IP_JOBS", 10000, "jobs an IP may create per `JOB_CREATION_WINDOW` (`0`: no limit)", low=0
    )
    janitor_interval_seconds: float = setting(
        "JANITOR_INTERVAL_SECONDS", 60.0, "how often each replica looks for expired jobs", low=0, above=True, high=_DAY
    )


@dataclass(frozen=True)
class AggregationSettings:
    """Aggregation"""

    smpc_coordinator_url: str | None = setting(
        "SMPC_COORDINATOR_URL",
        None,
        "the SMPC coordinator's base URL; the original's `COORDINATOR_HOST`/`COORDINATOR_PORT` are read when it is "
        "not set",
        parser=BASE_URL,
    )
    aggregation_backend: str = setting(
        "AGGREGATION_BACKEND",
        "none",
        "the backend of jobs that do not ask for one",
        choices=AGGREGATION_BACKENDS,
        shown_default="`smpc` with a coordinator, else `none`",
    )
    aggregation_timeout_seconds: float = setting(
        "AGGREGATION_TIMEOUT",
        1800.0,
        "seconds from the move to `AGGREGATING` by which a job is `COMPLETED` or `FAILED`",
        low=1,
        high=7 * _DAY,
    )
    collection_timeout_seconds: int = setting(
        "COLLECTION_TIMEOUT",
        _DAY,
        "seconds after its creation by which a job must have all its clients, unless its first update gives a "
        "`deadline`",
        unit="seconds",
        low=1,
        high=30 * _DAY,
    )
    secure_sum_round_timeout_seconds: float = setting(
        "SECURE_SUM_ROUND_TIMEOUT",
        300.0,
        "seconds each round of a secure sum (keys, shares, inputs, unmask) may take unless the job's first key "
        "gives a `roundTimeout`; a round closes then with the clients that answered if they are at least "
        "`minClients`",
        low=0.1,
        high=30 * _DAY,
    )
    aggregation_workers: int = setting(
        "AGGREGATION_WORKERS",
        8,
        "jobs this replica aggregates at once (`0`: none; the deadline sweeper still runs)",
        low=0,
        high=1000,
    )
    aggregation_claim_idle_seconds: float = setting(
        "AGGREGATION_CLAIM_IDLE",
        60.0,
        "seconds after which a job held by a silent worker is taken over",
        low=1,
        high=3600,
    )
    aggregation_sweep_seconds: float = setting(
        "AGGREGATION_SWEEP_SECONDS",
        5.0,
        "how often each replica looks for jobs past their deadlines",
        low=0.1,
        high=3600,
    )
    smpc_poll_interval_seconds: float = setting(
        "SMPC_POLL_INTERVAL", 0.5, "first interval of polling the coordinator", low=0.01, high=600
    )
    smpc_poll_max_interval_seconds: float = setting(
        "SMPC_POLL_MAX_INTERVAL", 5.0, "the cap of the polling interval's backoff", low=0.01, high=3600
    )
    smpc_request_timeout_seconds: float = setting(
        "SMPC_REQUEST_TIMEOUT", 10.0, "seconds per request to the coordinator", low=0.1, high=600
    )
    smpc_max_result_bytes: int = setting(
        "MAX_RESULT_BYTES",
        32 * 1024 * 1024,
        "largest `get-result` body read from the coordinator (a 10^6-value output fits); a larger one fails the job "
        "(`failureReason` says so)",
        unit="bytes",
        low=1024,
        high=1 << 31,
    )
    public_base_url: str | None = setting(
        "PUBLIC_BASE_URL",
        None,
        "this service's base URL as the coordinator reaches it: when set, each trigger carries a `returnUrl` "
        "(`/api/smpc/callback/{jobId}?token=...`, a random token per job) for the coordinator to push the result to, "
        "and polling it becomes the fallback",
        parser=BASE_URL,
    )


@dataclass(frozen=True)
class DeliverySettings:
    """Results delivery (the original's settings first)"""

    results_api_url: str | None = setting(
        "RESULTS_API_URL",
        None,
        "where each completed job's result is POSTed (the original's payload, with an `Idempotency-Key` header fixed "
        "per result: jobId, instanceId and the result's version)",
        parser=URL,
    )
    results_save_path: str = setting(
        "RESULTS_SAVE_PATH",
        "results",
        "directory of the result files, `aggregated_results_<jobId>_<UTC time>.json` / `.txt`",
    )
    enable_api_sending: bool = setting(
        "ENABLE_API_SENDING", True, "send results to `RESULTS_API_URL` (nothing is sent without a URL)", parser=BOOL
    )
    enable_filesystem_saving: bool = setting(
        "ENABLE_FILESYSTEM_SAVING", True, "write results as files under `RESULTS_SAVE_PATH`", parser=BOOL
    )
    results_formats: tuple[str, ...] = setting(
        "RESULTS_FORMATS", ("json", "txt"), "which result files are written", parser=FORMATS
    )
    results_api_token: str | None = setting(
        "RESULTS_API_TOKEN", None, "a bearer token for the results API", secret=True
    )
    results_api_headers: tuple[tuple[str, str], ...] = setting(
        "RESULTS_API_HEADERS", (), "extra headers for the results API", parser=HEADERS
    )
    delivery_timeout_seconds: float = setting(
        "DELIVERY_TIMEOUT", 10.0, "seconds per delivery attempt", low=0.1, high=600
    )
    delivery_attempts: int = setting(
        "DELIVERY_ATTEMPTS", 8, "attempts before a delivery is dead-lettered", low=1, high=1000
    )
    delivery_backoff_seconds: float = setting(
        "DELIVERY_BACKOFF",
        1.0,
        "first retry backoff (doubling, with jitter; a 429/503 `Retry-After` wins)",
        low=0.01,
        high=3600,
    )
    delivery_max_backoff_seconds: float = setting(
        "DELIVERY_MAX_BACKOFF", 60.0, "the cap of the retry backoff", low=0.01, high=_DAY
    )
    delivery_workers: int = setting("DELIVERY_WORKERS", 4, "deliveries this replica runs at once", low=0, high=1000)
    delivery_claim_idle_seconds: float = setting(
        "DELIVERY_CLAIM_IDLE", 60.0, "seconds before a silent worker's delivery is taken over", low=1, high=3600
    )
