"""Settings: the only module that reads the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from orchestrator.models import AGGREGATION_BACKENDS

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
# A host name as the Host header carries it, without a port: a DNS name (a leading dot: it and its
# subdomains), an IPv4 address or a bracketed IPv6 one.
_HOST_NAME = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\]")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5000
    # None means the embedded in-process fakeredis server.
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    redis_timeout: float = 2.0
    redis_max_connections: int = 64
    key_prefix: str = ""
    job_ttl_seconds: int = 7 * 24 * 3600
    event_history: int = 200
    max_body_bytes: int = 1024 * 1024
    # A request carrying a statistics vector (an update of a summed-vector job) may be this large.
    max_vector_body_bytes: int = 16 * 1024 * 1024
    # Bodies of at least this many bytes are parsed and laid out in a worker process, off the event loop
    # (0: always inline). Reading a schema costs about 0.12 ms of CPU per KiB: 16 KiB is about 2 ms.
    parse_offload_bytes: int = 16 * 1024
    # The most rows a client may count in a summed-vector job that does not say (its `maxRows`).
    vector_max_rows: int = 1_000_000
    # The most Redis memory one job may take: its schema, and per client its bookkeeping and its vector
    # (quotas.job_bytes); checked when the job is created.
    max_job_bytes: int = 2 * 1024**3
    # New jobs per JOB_CREATION_WINDOW, per client (token subject, or clientId without auth) and per IP; 0: off.
    job_creation_window_seconds: float = 3600.0
    rate_limit_client_jobs: int = 1000
    rate_limit_ip_jobs: int = 10000
    # New jobs are refused (507) while Redis' used_memory is at or above this fraction of its maxmemory (or,
    # when Redis has none, of MAX_REDIS_MEMORY_BYTES); 0: off.
    max_redis_memory_fraction: float = 0.9
    max_redis_memory_bytes: int = 0
    janitor_interval_seconds: float = 60.0
    retry_after_seconds: int = 1
    # The connection edge (orchestrator/edge.py, protocol.py). A request's headers, and then its body, must
    # arrive within these (408 and the connection closed); 0: no limit.
    http_header_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 60.0
    # Connections open at once per client IP (a TRUSTED_PROXIES address is not capped); 0: no cap.
    max_connections_per_ip: int = 256
    # File descriptors kept free for Redis, outbound calls and logs: new connections get 503 past it; 0: off.
    fd_reserve: int = 64
    log_dir: str = "logs"
    log_level: str = "INFO"
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    access_log: bool = True
    # WebSockets. An empty allow-list means same-origin only; "*" allows any origin.
    ws_allowed_origins: tuple[str, ...] = ()
    ws_max_connections: int = 10000
    ws_queue_size: int = 256
    # Kernel send buffer per socket: bounds what a client that stops reading can pin in memory
    # (Linux would otherwise grow it to several MB before the socket's queue even starts to fill).
    ws_send_buffer_bytes: int = 256 * 1024
    ws_heartbeat_seconds: float = 20.0
    ws_snapshot_jobs: int = 1000
    pubsub_ping_seconds: float = 5.0
    pubsub_liveness_seconds: float = 15.0
    # Aggregation.
    smpc_coordinator_url: str | None = None
    aggregation_backend: str = "none"
    aggregation_timeout_seconds: float = 1800.0
    collection_timeout_seconds: int = 86400
    aggregation_workers: int = 8
    aggregation_claim_idle_seconds: float = 60.0
    aggregation_sweep_seconds: float = 5.0
    smpc_poll_interval_seconds: float = 0.5
    smpc_poll_max_interval_seconds: float = 5.0
    smpc_request_timeout_seconds: float = 10.0
    # The largest get-result body read from the coordinator; a larger result fails its job.
    smpc_max_result_bytes: int = 32 * 1024 * 1024
    # This service's own base URL as the coordinator can reach it; when set, the coordinator is asked
    # to push results to it (returnUrl) and polling becomes the fallback.
    public_base_url: str | None = None
    # Results delivery (the original's settings first).
    results_api_url: str | None = None
    results_save_path: str = "results"
    enable_api_sending: bool = True
    enable_filesystem_saving: bool = True
    results_formats: tuple[str, ...] = ("json", "txt")
    results_api_token: str | None = field(default=None, repr=False)
    results_api_headers: tuple[tuple[str, str], ...] = ()
    delivery_timeout_seconds: float = 10.0
    delivery_attempts: int = 8
    delivery_backoff_seconds: float = 1.0
    delivery_max_backoff_seconds: float = 60.0
    delivery_workers: int = 4
    delivery_claim_idle_seconds: float = 60.0
    # Security (auth is on when a secret or a public key is configured).
    auth_jwt_secret: str | None = field(default=None, repr=False)
    auth_jwt_public_key: str | None = None  # PEM, RSA (RS256) or EC P-256 (ES256)
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_leeway_seconds: float = 30.0
    insecure_no_auth: bool = False
    ws_ticket_ttl_seconds: float = 30.0
    ws_max_per_token: int = 20
    # Writes per RATE_LIMIT_WINDOW, per client (token subject, or clientId without auth) and per IP; 0: off.
    rate_limit_window_seconds: float = 10.0
    rate_limit_client_writes: int = 600
    rate_limit_ip_writes: int = 6000
    cors_allowed_origins: tuple[str, ...] = ()
    # Host names (the Host header) this service answers to besides loopback, HOST and PUBLIC_BASE_URL's;
    # "*": any. Refusing the others keeps DNS-rebinding pages out.
    allowed_hosts: tuple[str, ...] = ()
    # Proxies whose X-Forwarded-For is believed (for the client IP of rate limits and the audit trail).
    trusted_proxies: tuple[str, ...] = ()
    audit_max_entries: int = 100_000
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, validating every value."""
        env = os.environ if environ is None else environ
        default = cls()
        redis_url = env.get("REDIS_URL") or None
        if redis_url is None and (env.get("REDIS_HOST") or env.get("REDIS_PORT")):
            host = env.get("REDIS_HOST") or "localhost"
            port = _parse(env, "REDIS_PORT", 6379, int, lambda v: 1 <= v <= 65535, "an integer 1-65535")
            redis_url = f"redis://{host}:{port}/0"
        smpc_url = env.get("SMPC_COORDINATOR_URL") or None
        if smpc_url is None and env.get("COORDINATOR_HOST"):
            # The original's settings.
            coordinator_port = _parse(env, "COORDINATOR_PORT", 80, int, lambda v: 1 <= v <= 65535, "an integer 1-65535")
            smpc_url = f"http://{env['COORDINATOR_HOST']}:{coordinator_port}"
        settings = cls(
            smpc_coordinator_url=smpc_url.rstrip("/") if smpc_url else None,
            aggregation_backend=env.get("AGGREGATION_BACKEND") or ("smpc" if smpc_url else "none"),
            aggregation_timeout_seconds=_parse(
                env,
                "AGGREGATION_TIMEOUT",
                default.aggregation_timeout_seconds,
                float,
                lambda v: 1 <= v <= 7 * 86400,
                "seconds, 1-604800",
            ),
            collection_timeout_seconds=_parse(
                env,
                "COLLECTION_TIMEOUT",
                default.collection_timeout_seconds,
                int,
                lambda v: 1 <= v <= 30 * 86400,
                "seconds, 1-2592000",
            ),
            aggregation_workers=_parse(
                env,
                "AGGREGATION_WORKERS",
                default.aggregation_workers,
                int,
                lambda v: 0 <= v <= 1000,
                "an integer 0-1000",
            ),
            aggregation_claim_idle_seconds=_parse(
                env,
                "AGGREGATION_CLAIM_IDLE",
                default.aggregation_claim_idle_seconds,
                float,
                lambda v: 1 <= v <= 3600,
                "seconds, 1-3600",
            ),
            aggregation_sweep_seconds=_parse(
                env,
                "AGGREGATION_SWEEP_SECONDS",
                default.aggregation_sweep_seconds,
                float,
                lambda v: 0.1 <= v <= 3600,
                "seconds, 0.1-3600",
            ),
            smpc_poll_interval_seconds=_parse(
                env,
                "SMPC_POLL_INTERVAL",
                default.smpc_poll_interval_seconds,
                float,
                lambda v: 0.01 <= v <= 600,
                "seconds, 0.01-600",
            ),
            smpc_poll_max_interval_seconds=_parse(
                env,
                "SMPC_POLL_MAX_INTERVAL",
                default.smpc_poll_max_interval_seconds,
                float,
                lambda v: 0.01 <= v <= 3600,
                "seconds, 0.01-3600",
            ),
            smpc_request_timeout_seconds=_parse(
                env,
                "SMPC_REQUEST_TIMEOUT",
                default.smpc_request_timeout_seconds,
                float,
                lambda v: 0.1 <= v <= 600,
                "seconds, 0.1-600",
            ),
            smpc_max_result_bytes=_parse(
                env,
                "MAX_RESULT_BYTES",
                default.smpc_max_result_bytes,
                int,
                lambda v: 1024 <= v <= 1 << 31,
                "bytes, 1024-2147483648",
            ),
            public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            results_api_url=env.get("RESULTS_API_URL") or None,
            results_save_path=env.get("RESULTS_SAVE_PATH") or default.results_save_path,
            enable_api_sending=_parse(
                env, "ENABLE_API_SENDING", default.enable_api_sending, _parse_bool, lambda v: True, "true or false"
            ),
            enable_filesystem_saving=_parse(
                env,
                "ENABLE_FILESYSTEM_SAVING",
                default.enable_filesystem_saving,
                _parse_bool,
                lambda v: True,
                "true or false",
            ),
            results_formats=_parse(
                env, "RESULTS_FORMATS", default.results_formats, _parse_formats, lambda v: True, "json, txt or json,txt"
            ),
            results_api_token=env.get("RESULTS_API_TOKEN") or None,
            results_api_headers=_parse(
                env,
                "RESULTS_API_HEADERS",
                default.results_api_headers,
                _parse_headers,
                lambda v: True,
                'a JSON object of header names to values, e.g. {"X-Tenant": "a"}',
            ),
            delivery_timeout_seconds=_parse(
                env,
                "DELIVERY_TIMEOUT",
                default.delivery_timeout_seconds,
                float,
                lambda v: 0.1 <= v <= 600,
                "seconds, 0.1-600",
            ),
            delivery_attempts=_parse(
                env, "DELIVERY_ATTEMPTS", default.delivery_attempts, int, lambda v: 1 <= v <= 1000, "an integer 1-1000"
            ),
            delivery_backoff_seconds=_parse(
                env,
                "DELIVERY_BACKOFF",
                default.delivery_backoff_seconds,
                float,
                lambda v: 0.01 <= v <= 3600,
                "seconds, 0.01-3600",
            ),
            delivery_max_backoff_seconds=_parse(
                env,
                "DELIVERY_MAX_BACKOFF",
                default.delivery_max_backoff_seconds,
                float,
                lambda v: 0.01 <= v <= 86400,
                "seconds, 0.01-86400",
            ),
            delivery_workers=_parse(
                env, "DELIVERY_WORKERS", default.delivery_workers, int, lambda v: 0 <= v <= 1000, "an integer 0-1000"
            ),
            delivery_claim_idle_seconds=_parse(
                env,
                "DELIVERY_CLAIM_IDLE",
                default.delivery_claim_idle_seconds,
                float,
                lambda v: 1 <= v <= 3600,
                "seconds, 1-3600",
            ),
            **_security_from_env(env, default),
            host=env.get("HOST", default.host),
            port=_parse(env, "PORT", default.port, int, lambda v: 1 <= v <= 65535, "an integer 1-65535"),
            redis_url=redis_url,
            redis_timeout=_parse(
                env, "REDIS_TIMEOUT", default.redis_timeout, float, lambda v: 0 < v <= 60, "seconds, 0-60"
            ),
            redis_max_connections=_parse(
                env,
                "REDIS_MAX_CONNECTIONS",
                default.redis_max_connections,
                int,
                lambda v: 1 <= v <= 10000,
                "an integer 1-10000",
            ),
            key_prefix=env.get("KEY_PREFIX", default.key_prefix),
            job_ttl_seconds=_parse(
                env, "JOB_TTL_SECONDS", default.job_ttl_seconds, int, lambda v: v >= 60, "an integer >= 60"
            ),
            event_history=_parse(
                env, "EVENT_HISTORY", default.event_history, int, lambda v: 1 <= v <= 100000, "an integer 1-100000"
            ),
            max_body_bytes=_parse(
                env,
                "MAX_BODY_BYTES",
                default.max_body_bytes,
                int,
                lambda v: 1024 <= v <= 1 << 30,
                "bytes, 1024-1073741824",
            ),
            max_vector_body_bytes=_parse(
                env,
                "MAX_VECTOR_BODY_BYTES",
                default.max_vector_body_bytes,
                int,
                lambda v: 1024 <= v <= 1 << 30,
                "bytes, 1024-1073741824",
            ),
            parse_offload_bytes=_parse(
                env,
                "PARSE_OFFLOAD_BYTES",
                default.parse_offload_bytes,
                int,
                lambda v: v >= 0,
                "bytes, 0 or more (0: parse every body on the event loop)",
            ),
            max_job_bytes=_parse(
                env,
                # MAX_JOB_VECTOR_BYTES: its name when it counted only vectors.
                "MAX_JOB_BYTES" if env.get("MAX_JOB_BYTES") else "MAX_JOB_VECTOR_BYTES",
                default.max_job_bytes,
                int,
                lambda v: 1024 <= v <= 1 << 40,
                "bytes, 1024-1099511627776",
            ),
            job_creation_window_seconds=_parse(
                env,
                "JOB_CREATION_WINDOW",
                default.job_creation_window_seconds,
                float,
                lambda v: 1 <= v <= 7 * 86400,
                "seconds, 1-604800",
            ),
            rate_limit_client_jobs=_parse(
                env, "RATE_LIMIT_CLIENT_JOBS", default.rate_limit_client_jobs, int, lambda v: v >= 0, "an integer >= 0"
            ),
            rate_limit_ip_jobs=_parse(
                env, "RATE_LIMIT_IP_JOBS", default.rate_limit_ip_jobs, int, lambda v: v >= 0, "an integer >= 0"
            ),
            max_redis_memory_fraction=_parse(
                env,
                "MAX_REDIS_MEMORY_FRACTION",
                default.max_redis_memory_fraction,
                float,
                lambda v: 0 <= v <= 1,
                "a fraction 0-1 (0: off)",
            ),
            max_redis_memory_bytes=_parse(
                env, "MAX_REDIS_MEMORY_BYTES", default.max_redis_memory_bytes, int, lambda v: v >= 0, "bytes, >= 0"
            ),
            vector_max_rows=_parse(
                env, "VECTOR_MAX_ROWS", default.vector_max_rows, int, lambda v: 1 <= v <= 10**12, "an integer 1-10^12"
            ),
            janitor_interval_seconds=_parse(
                env,
                "JANITOR_INTERVAL_SECONDS",
                default.janitor_interval_seconds,
                float,
                lambda v: 0 < v <= 86400,
                "seconds, 0-86400",
            ),
            retry_after_seconds=_parse(
                env,
                "RETRY_AFTER_SECONDS",
                default.retry_after_seconds,
                int,
                lambda v: 1 <= v <= 3600,
                "an integer 1-3600",
            ),
            http_header_timeout_seconds=_parse(
                env,
                "HTTP_HEADER_TIMEOUT",
                default.http_header_timeout_seconds,
                float,
                lambda v: 0 <= v <= 3600,
                "seconds, 0-3600 (0: no limit)",
            ),
            http_body_timeout_seconds=_parse(
                env,
                "HTTP_BODY_TIMEOUT",
                default.http_body_timeout_seconds,
                float,
                lambda v: 0 <= v <= 86400,
                "seconds, 0-86400 (0: no limit)",
            ),
            max_connections_per_ip=_parse(
                env,
                "MAX_CONNECTIONS_PER_IP",
                default.max_connections_per_ip,
                int,
                lambda v: 0 <= v <= 1_000_000,
                "an integer 0-1000000 (0: no cap)",
            ),
            fd_reserve=_parse(
                env, "FD_RESERVE", default.fd_reserve, int, lambda v: 0 <= v <= 100_000, "an integer 0-100000 (0: off)"
            ),
            log_dir=env.get("LOG_DIR", default.log_dir),
            log_level=_parse(
                env,
                "LOG_LEVEL",
                default.log_level,
                str.upper,
                lambda v: v in LOG_LEVELS,
                "one of " + ", ".join(sorted(LOG_LEVELS)),
            ),
            log_max_bytes=_parse(
                env, "LOG_MAX_BYTES", default.log_max_bytes, int, lambda v: v >= 1024, "bytes, >= 1024"
            ),
            log_backups=_parse(
                env, "LOG_BACKUPS", default.log_backups, int, lambda v: 0 <= v <= 100, "an integer 0-100"
            ),
            access_log=_parse(env, "ACCESS_LOG", default.access_log, _parse_bool, lambda v: True, "true or false"),
            ws_allowed_origins=_parse(
                env,
                "WS_ALLOWED_ORIGINS",
                default.ws_allowed_origins,
                _parse_origins,
                lambda v: True,
                "a comma-separated list of origins like https://example.org, or *",
            ),
            ws_max_connections=_parse(
                env,
                "WS_MAX_CONNECTIONS",
                default.ws_max_connections,
                int,
                lambda v: 1 <= v <= 1_000_000,
                "an integer 1-1000000",
            ),
            ws_queue_size=_parse(
                env, "WS_QUEUE_SIZE", default.ws_queue_size, int, lambda v: 1 <= v <= 100_000, "an integer 1-100000"
            ),
            ws_send_buffer_bytes=_parse(
                env,
                "WS_SEND_BUFFER_BYTES",
                default.ws_send_buffer_bytes,
                int,
                lambda v: 4096 <= v <= 64 << 20,
                "bytes, 4096-67108864",
            ),
            ws_heartbeat_seconds=_parse(
                env,
                "WS_HEARTBEAT_SECONDS",
                default.ws_heartbeat_seconds,
                float,
                lambda v: 1 <= v <= 3600,
                "seconds, 1-3600",
            ),
            ws_snapshot_jobs=_parse(
                env, "WS_SNAPSHOT_JOBS", default.ws_snapshot_jobs, int, lambda v: 1 <= v <= 5000, "an integer 1-5000"
            ),
            pubsub_ping_seconds=_parse(
                env,
                "PUBSUB_PING_SECONDS",
                default.pubsub_ping_seconds,
                float,
                lambda v: 0.1 <= v <= 300,
                "seconds, 0.1-300",
            ),
            pubsub_liveness_seconds=_parse(
                env,
                "PUBSUB_LIVENESS_SECONDS",
                default.pubsub_liveness_seconds,
                float,
                lambda v: 0.5 <= v <= 3600,
                "seconds, 0.5-3600",
            ),
        )
        settings.validate()
        return settings

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced (None values are ignored), validated."""
        settings = replace(self, **{k: v for k, v in changes.items() if v is not None})
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.aggregation_backend not in AGGREGATION_BACKENDS:
            raise SettingsError(
                f"AGGREGATION_BACKEND: must be one of {', '.join(sorted(AGGREGATION_BACKENDS))}, "
                f"got {self.aggregation_backend!r}"
            )
        if self.aggregation_backend == "smpc" and not self.smpc_coordinator_url:
            raise SettingsError("AGGREGATION_BACKEND: smpc needs SMPC_COORDINATOR_URL")
        if self.results_api_url and urlsplit(self.results_api_url).scheme not in {"http", "https"}:
            raise SettingsError(f"RESULTS_API_URL: must be an http:// or https:// URL, got {self.results_api_url!r}")
        if self.public_base_url and urlsplit(self.public_base_url).scheme not in {"http", "https"}:
            raise SettingsError(f"PUBLIC_BASE_URL: must be an http:// or https:// URL, got {self.public_base_url!r}")
        if self.smpc_coordinator_url and urlsplit(self.smpc_coordinator_url).scheme not in {"http", "https"}:
            raise SettingsError(
                f"SMPC_COORDINATOR_URL: must be an http:// or https:// URL, got {self.smpc_coordinator_url!r}"
            )
        if self.pubsub_liveness_seconds <= self.pubsub_ping_seconds:
            raise SettingsError("PUBSUB_LIVENESS_SECONDS: must be longer than PUBSUB_PING_SECONDS")
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme not in {"redis", "rediss", "unix"}:
                raise SettingsError(
                    f"REDIS_URL: scheme must be redis://, rediss:// or unix://, got {scheme or 'none'!r}"
                )
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"PORT: must be an integer 1-65535, got {self.port}")
        if not self.host:
            raise SettingsError("HOST: must not be empty")
        if self.auth_jwt_secret is not None and len(self.auth_jwt_secret.encode()) < 32:
            raise SettingsError("AUTH_JWT_SECRET: must be at least 32 bytes (HS256 needs a key as long as its hash)")
        if self.auth_jwt_public_key is not None:
            _check_public_key(self.auth_jwt_public_key)
        if any(c in self.key_prefix for c in "{} \t\n"):
            raise SettingsError(f"KEY_PREFIX: must not contain braces or whitespace, got {self.key_prefix!r}")

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwt_secret is not None or self.auth_jwt_public_key is not None

    @property
    def redis_label(self) -> str:
        """The Redis location for logs, with any password removed."""
        if self.redis_url is None:
            return "embedded fakeredis (in-process, not persisted)"
        parts = urlsplit(self.redis_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration without secrets, for the start-up log."""
        return {
            "host": self.host,
            "port": self.port,
            "redis": self.redis_label,
            "redis_timeout": self.redis_timeout,
            "key_prefix": self.key_prefix,
            "job_ttl_seconds": self.job_ttl_seconds,
            "event_history": self.event_history,
            "max_body_bytes": self.max_body_bytes,
            "max_vector_body_bytes": self.max_vector_body_bytes,
            "parse_offload_bytes": self.parse_offload_bytes,
            "vector_max_rows": self.vector_max_rows,
            "max_job_bytes": self.max_job_bytes,
            "job_quotas": f"{self.rate_limit_client_jobs}/client, {self.rate_limit_ip_jobs}/IP per "
            f"{self.job_creation_window_seconds:g} s",
            "max_redis_memory": f"{self.max_redis_memory_fraction:g} of maxmemory"
            + (f" (else of {self.max_redis_memory_bytes} bytes)" if self.max_redis_memory_bytes else ""),
            "auth": ("HS256 " if self.auth_jwt_secret else "") + ("RS256/ES256" if self.auth_jwt_public_key else "")
            or ("OFF (--insecure-no-auth)" if self.insecure_no_auth else "off"),
            "rate_limits": f"{self.rate_limit_client_writes}/client, {self.rate_limit_ip_writes}/IP per "
            f"{self.rate_limit_window_seconds:g} s",
            "cors_allowed_origins": list(self.cors_allowed_origins) or "none",
            "allowed_hosts": list(self.allowed_hosts) or "loopback, HOST and PUBLIC_BASE_URL's host",
            "log_dir": self.log_dir,
            "log_level": self.log_level,
            "access_log": self.access_log,
            "ws_allowed_origins": list(self.ws_allowed_origins) or "same-origin",
            "ws_max_connections": self.ws_max_connections,
            "http_timeouts": f"headers {self.http_header_timeout_seconds:g} s, "
            f"body {self.http_body_timeout_seconds:g} s",
            "max_connections_per_ip": self.max_connections_per_ip or "no cap",
            "fd_reserve": self.fd_reserve,
            "aggregation_backend": self.aggregation_backend,
            "smpc_coordinator": _without_credentials(self.smpc_coordinator_url) if self.smpc_coordinator_url else None,
            "aggregation_workers": self.aggregation_workers,
            "aggregation_timeout_seconds": self.aggregation_timeout_seconds,
            "results_destinations": list(self.delivery_destinations) or "none (results are logged)",
            "results_api": _without_credentials(self.results_api_url) if self.results_api_url else None,
            "results_save_path": self.results_save_path,
            "results_formats": list(self.results_formats),
        }

    @property
    def delivery_destinations(self) -> tuple[str, ...]:
        """Where each completed job's result goes: "api" and/or "file"; each flag does only its own thing."""
        destinations = []
        if self.enable_api_sending and self.results_api_url:
            destinations.append("api")
        if self.enable_filesystem_saving:
            destinations.append("file")
        return tuple(destinations)


def _security_from_env(env: Mapping[str, str], default: Settings) -> dict[str, Any]:
    def secret(name: str) -> str | None:
        """NAME, or the contents of the file NAME_FILE (without its trailing newline)."""
        path = env.get(f"{name}_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    return handle.read().rstrip("\r\n") or None
            except OSError as e:
                raise SettingsError(f"{name}_FILE: cannot read {path}: {e.strerror}") from None
        return env.get(name) or None

    public_key = None
    if path := env.get("AUTH_JWT_PUBLIC_KEY_FILE"):
        try:
            with open(path, encoding="utf-8") as handle:
                public_key = handle.read()
        except OSError as e:
            raise SettingsError(f"AUTH_JWT_PUBLIC_KEY_FILE: cannot read {path}: {e.strerror}") from None
    return {
        "auth_jwt_secret": secret("AUTH_JWT_SECRET"),
        "auth_jwt_public_key": public_key,
        "auth_jwt_issuer": env.get("AUTH_JWT_ISSUER") or None,
        "auth_jwt_audience": env.get("AUTH_JWT_AUDIENCE") or None,
        "auth_leeway_seconds": _parse(
            env, "AUTH_LEEWAY_SECONDS", default.auth_leeway_seconds, float, lambda v: 0 <= v <= 600, "seconds, 0-600"
        ),
        "insecure_no_auth": _parse(
            env, "INSECURE_NO_AUTH", default.insecure_no_auth, _parse_bool, lambda v: True, "true or false"
        ),
        "ws_ticket_ttl_seconds": _parse(
            env, "WS_TICKET_TTL", default.ws_ticket_ttl_seconds, float, lambda v: 1 <= v <= 3600, "seconds, 1-3600"
        ),
        "ws_max_per_token": _parse(
            env, "WS_MAX_PER_TOKEN", default.ws_max_per_token, int, lambda v: 1 <= v <= 100000, "an integer 1-100000"
        ),
        "rate_limit_window_seconds": _parse(
            env,
            "RATE_LIMIT_WINDOW",
            default.rate_limit_window_seconds,
            float,
            lambda v: 0.1 <= v <= 3600,
            "seconds, 0.1-3600",
        ),
        "rate_limit_client_writes": _parse(
            env, "RATE_LIMIT_CLIENT_WRITES", default.rate_limit_client_writes, int, lambda v: v >= 0, "an integer >= 0"
        ),
        "rate_limit_ip_writes": _parse(
            env, "RATE_LIMIT_IP_WRITES", default.rate_limit_ip_writes, int, lambda v: v >= 0, "an integer >= 0"
        ),
        "cors_allowed_origins": _parse(
            env,
            "CORS_ALLOWED_ORIGINS",
            default.cors_allowed_origins,
            _parse_origins,
            lambda v: True,
            "comma-separated http(s) origins, or *",
        ),
        "audit_max_entries": _parse(
            env,
            "AUDIT_MAX_ENTRIES",
            default.audit_max_entries,
            int,
            lambda v: 100 <= v <= 10**8,
            "an integer 100-100000000",
        ),
        "allowed_hosts": _parse(
            env,
            "ALLOWED_HOSTS",
            default.allowed_hosts,
            _parse_hosts,
            lambda v: True,
            "comma-separated host names (example.org, or .example.org for it and its subdomains), or *",
        ),
        "trusted_proxies": tuple(p.strip() for p in env.get("TRUSTED_PROXIES", "").split(",") if p.strip()),
        "redis_username": env.get("REDIS_USERNAME") or None,
        "redis_password": secret("REDIS_PASSWORD"),
    }


def _check_public_key(pem: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise SettingsError("AUTH_JWT_PUBLIC_KEY_FILE: not a PEM public key") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise SettingsError("AUTH_JWT_PUBLIC_KEY_FILE: must be an RSA (RS256) or EC P-256 (ES256) public key")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp256r1":
        raise SettingsError("AUTH_JWT_PUBLIC_KEY_FILE: an EC key must be on P-256 (ES256)")


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


def _parse_formats(raw: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in raw.split(",") if f.strip()))
    if not formats or any(f not in ("json", "txt") for f in formats):
        raise ValueError(raw)
    return formats


def _parse_headers(raw: str) -> tuple[tuple[str, str], ...]:
    import json

    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(raw)
    return tuple(data.items())


def _parse_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and urlsplit(origin).scheme not in {"http", "https"}:
            raise ValueError(origin)
    return origins


def _parse_hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    for host in hosts:
        if host != "*" and not _HOST_NAME.fullmatch(host):
            raise ValueError(host)
    return hosts


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


def _parse(
    env: Mapping[str, str], name: str, default: T, convert: Callable[[str], T], ok: Callable[[T], bool], expected: str
) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = convert(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}: must be {expected}, got {raw!r}") from None
    if not ok(value):
        raise SettingsError(f"{name}: must be {expected}, got {raw!r}")
    return value


def client_base_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the CLI's client commands find the service: ORCHESTRATOR_URL, else the local default."""
    env = os.environ if environ is None else environ
    return env.get("ORCHESTRATOR_URL") or "http://127.0.0.1:5000"
