"""The settings of what faces clients: the HTTP server, WebSockets, security, logs; each declared once."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.settings.declare import BOOL, HOSTS, LIST, ORIGINS, PEM_FILE, UPPER, option, setting

LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_KIB = 1024
_MIB = 1024 * 1024


@dataclass(frozen=True)
class HttpSettings:
    """HTTP server"""

    host: str = setting("HOST", "127.0.0.1", "address to bind (`0.0.0.0` in the container)", blank_is_value=True)
    port: int = setting("PORT", 5000, "port to listen on", low=1, high=65535)
    retry_after_seconds: int = setting("RETRY_AFTER_SECONDS", 1, "`Retry-After` sent with a `503`", low=1, high=3600)
    # The connection edge (edge.py, protocol.py).
    http_header_timeout_seconds: float = setting(
        "HTTP_HEADER_TIMEOUT",
        10.0,
        "seconds a request's headers may take to arrive; later gets `408 request_timeout` and the connection is closed",
        low=0,
        high=3600,
        note="0: no limit",
    )
    http_body_timeout_seconds: float = setting(
        "HTTP_BODY_TIMEOUT",
        60.0,
        "seconds a request's whole body may take to arrive, as `HTTP_HEADER_TIMEOUT`",
        low=0,
        high=86400,
        note="0: no limit",
    )
    max_connections_per_ip: int = setting(
        "MAX_CONNECTIONS_PER_IP",
        256,
        "connections open at once from one address (a `TRUSTED_PROXIES` address is not capped); more get "
        "`429 too_many_connections`",
        low=0,
        high=1_000_000,
        note="0: no cap",
    )
    fd_reserve: int = setting(
        "FD_RESERVE",
        64,
        "file descriptors kept free for Redis, outbound calls and logs (at most a quarter of the process's limit): "
        "new connections get `503 server_busy` past it",
        low=0,
        high=100_000,
        note="0: off",
    )
    max_body_bytes: int = setting("MAX_BODY_BYTES", _MIB, "largest request body", unit="bytes", low=_KIB, high=1 << 30)
    max_vector_body_bytes: int = setting(
        "MAX_VECTOR_BODY_BYTES",
        16 * _MIB,
        "largest update carrying a statistics vector (a 10^6-value vector is 8 MB raw, 10.7 MB in base64)",
        unit="bytes",
        low=_KIB,
        high=1 << 30,
    )
    # Reading a schema costs about 0.12 ms of CPU per KiB: 16 KiB is about 2 ms.
    parse_offload_bytes: int = setting(
        "PARSE_OFFLOAD_BYTES",
        16 * _KIB,
        "bodies of at least this size are parsed, validated and laid out in a worker process, so the event loop "
        "keeps answering (`/healthz` within 100 ms while a 16 MiB body is read)",
        unit="bytes",
        low=0,
        wording="bytes, 0 or more (0: parse every body on the event loop)",
    )


@dataclass(frozen=True)
class WebSocketSettings:
    """WebSockets"""

    ws_allowed_origins: tuple[str, ...] = setting(
        "WS_ALLOWED_ORIGINS",
        (),
        "origins allowed to open WebSockets from a browser (empty: the same origin only)",
        parser=ORIGINS,
        wording="a comma-separated list of origins like https://example.org, or *",
    )
    ws_max_connections: int = setting(
        "WS_MAX_CONNECTIONS", 10000, "WebSockets per process; more get `503`", low=1, high=1_000_000
    )
    ws_queue_size: int = setting(
        "WS_QUEUE_SIZE",
        256,
        "events queued per socket before a socket that does not read is dropped (`1013`)",
        low=1,
        high=100_000,
    )
    # Linux would otherwise grow the kernel's buffer to several MB before the socket's queue even starts to fill.
    ws_send_buffer_bytes: int = setting(
        "WS_SEND_BUFFER_BYTES",
        256 * _KIB,
        "bytes a socket may have unsent (kernel and process each) before it counts as not reading",
        unit="bytes",
        low=4096,
        high=64 << 20,
    )
    ws_heartbeat_seconds: float = setting("WS_HEARTBEAT_SECONDS", 20.0, "WebSocket protocol pings", low=1, high=3600)
    ws_snapshot_jobs: int = setting("WS_SNAPSHOT_JOBS", 1000, "jobs in the `/ws` snapshot", low=1, high=5000)
    ws_ticket_ttl_seconds: float = setting(
        "WS_TICKET_TTL", 30.0, "seconds a WebSocket ticket (`POST /api/ws-ticket`) stays valid", low=1, high=3600
    )
    ws_max_per_token: int = setting("WS_MAX_PER_TOKEN", 20, "sockets per token per replica", low=1, high=100_000)


@dataclass(frozen=True)
class SecuritySettings:
    """Security (authentication is on when a secret or a public key is configured)"""

    auth_jwt_secret: str | None = setting(
        "AUTH_JWT_SECRET", None, "HS256 secret (at least 32 bytes); turns authentication on", secret=True
    )
    auth_jwt_public_key: str | None = setting(
        "AUTH_JWT_PUBLIC_KEY_FILE",
        None,
        "a file with a PEM public key, RSA (RS256) or EC P-256 (ES256); turns authentication on",
        parser=PEM_FILE,
        from_file=True,
    )
    auth_jwt_issuer: str | None = setting("AUTH_JWT_ISSUER", None, "the `iss` claim tokens must carry, if set")
    auth_jwt_audience: str | None = setting("AUTH_JWT_AUDIENCE", None, "the `aud` claim tokens must carry, if set")
    auth_leeway_seconds: float = setting("AUTH_LEEWAY_SECONDS", 30.0, "clock skew allowed on `exp`", low=0, high=600)
    insecure_no_auth: bool = setting(
        "INSECURE_NO_AUTH", False, "allow a non-loopback `HOST` without authentication (never in production)"
    )
    rate_limit_window_seconds: float = setting(
        "RATE_LIMIT_WINDOW", 10.0, "seconds of a rate-limit window", low=0.1, high=3600
    )
    # Per client: its token's subject, or its clientId without auth.
    rate_limit_client_writes: int = setting(
        "RATE_LIMIT_CLIENT_WRITES", 600, "writes per window per client (`0`: no limit)", low=0
    )
    rate_limit_ip_writes: int = setting("RATE_LIMIT_IP_WRITES", 6000, "writes per window per IP (`0`: no limit)", low=0)
    cors_allowed_origins: tuple[str, ...] = setting(
        "CORS_ALLOWED_ORIGINS",
        (),
        "origins allowed to call the API from a browser (empty: none); writes from another site's page are refused "
        "(`403 origin_not_allowed`)",
        parser=ORIGINS,
    )
    # Refusing the other Host headers keeps DNS-rebinding pages out.
    allowed_hosts: tuple[str, ...] = setting(
        "ALLOWED_HOSTS",
        (),
        "host names (no port) the `Host` header may carry besides `localhost`, loopback addresses, `HOST` (unless "
        "`0.0.0.0`) and `PUBLIC_BASE_URL`'s host (`*`: any); others get `421 host_not_allowed`",
        parser=HOSTS,
    )
    trusted_proxies: tuple[str, ...] = setting(
        "TRUSTED_PROXIES",
        (),
        "proxy addresses whose `X-Forwarded-For` names the client's IP (for rate limits and the audit trail)",
        parser=LIST,
    )
    audit_max_entries: int = setting(
        "AUDIT_MAX_ENTRIES", 100_000, "audit entries kept (approximately)", low=100, high=10**8
    )


@dataclass(frozen=True)
class LogSettings:
    """Logs"""

    log_dir: str = setting(
        "LOG_DIR", "logs", "directory of `computations-orchestrator.log` (rotated)", blank_is_value=True
    )
    log_level: str = setting("LOG_LEVEL", "INFO", "the least severe level logged", parser=UPPER, choices=LOG_LEVELS)
    log_max_bytes: int = setting(
        "LOG_MAX_BYTES", 10 * _MIB, "size at which the log file is rotated", unit="bytes", low=_KIB
    )
    log_backups: int = setting("LOG_BACKUPS", 5, "rotated log files kept", low=0, high=100)
    access_log: bool = setting(
        "ACCESS_LOG", True, "one log line per request (method, path, status, duration)", parser=BOOL
    )


CLIENT_URL = option(
    "ORCHESTRATOR_URL",
    "http://127.0.0.1:5000",
    "where the client commands find the service",
)
# Read by the CLI itself (cli.py), which takes no NAME_FILE for it: not declared a secret.
CLIENT_TOKEN = option("ORCHESTRATOR_TOKEN", None, "the client commands' bearer token")
