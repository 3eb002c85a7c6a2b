"""Who may do what: the roles each route takes (ACCESS), and the checks a handler adds: a client acts only
as itself, and reads only the jobs it takes part in; a token's `jobs` patterns bound every role.

- client (as its own `sub`) or admin: `POST /api/update`, `POST /api/jobs/{jobId}/keys`, `.../shares`, `.../unmask`;
- client (its own jobs), viewer or admin: `GET /api/job-status/{jobId}`, `GET /api/jobs/{jobId}`,
  `GET /api/jobs/{jobId}/keys`, `GET /api/jobs/{jobId}/shares/{clientId}` (a client: its own only),
  `GET /api/jobs/{jobId}/unmask`, `/ws/jobs/{jobId}`; any role: `POST /api/ws-ticket`;
- viewer or admin: `GET /api/jobs`, `/ws`, `GET /metrics`;
- admin: `POST /api/jobs/{jobId}/cancel`, `POST /api/jobs/{jobId}/close`, `POST /api/jobs/{jobId}/deliveries/retry`,
  `GET /api/audit`;
- anyone: `/`, `/healthz`, `/readyz`, `/api/openapi.json`, `/api/whoami`, `/dashboard`, `/static/`;
- the coordinator, with the job's callback token: `POST /api/smpc/callback/{jobId}`.
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.errors import Forbidden
from orchestrator.security.tokens import ANONYMOUS, Principal

ANY_ROLE = frozenset({"client", "viewer", "admin"})
WRITERS = frozenset({"client", "admin"})
READERS = frozenset({"viewer", "admin"})
ADMINS = frozenset({"admin"})

# (method, route) -> the roles that may call it; None: no token needed.
ACCESS: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/"): None,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/api/openapi.json"): None,
    ("GET", "/api/whoami"): None,
    ("GET", "/dashboard"): None,
    ("POST", "/api/smpc/callback/{jobId}"): None,
    ("GET", "/metrics"): READERS,
    ("POST", "/api/update"): WRITERS,
    ("POST", "/api/jobs/{jobId}/keys"): WRITERS,
    ("GET", "/api/jobs/{jobId}/keys"): ANY_ROLE,
    ("POST", "/api/jobs/{jobId}/shares"): WRITERS,
    ("GET", "/api/jobs/{jobId}/shares/{clientId}"): ANY_ROLE,
    ("GET", "/api/jobs/{jobId}/unmask"): ANY_ROLE,
    ("POST", "/api/jobs/{jobId}/unmask"): WRITERS,
    ("POST", "/api/jobs/{jobId}/close"): ADMINS,
    ("GET", "/api/job-status/{jobId}"): ANY_ROLE,
    ("GET", "/api/jobs/{jobId}"): ANY_ROLE,
    ("GET", "/ws/jobs/{jobId}"): ANY_ROLE,
    ("POST", "/api/ws-ticket"): ANY_ROLE,
    ("GET", "/api/jobs"): READERS,
    ("GET", "/ws"): READERS,
    ("POST", "/api/jobs/{jobId}/cancel"): ADMINS,
    ("POST", "/api/jobs/{jobId}/deliveries/retry"): ADMINS,
    ("GET", "/api/audit"): ADMINS,
}
JSON = "application/json"
# (method, route) -> the media types a write's body may be (JSON also as application/*+json); a write the
# table does not name takes JSON. A write without a body may leave Content-Type out, but never send
# another type: what an HTML form of any site may post (text/plain, urlencoded, multipart) is refused.
BODY_TYPES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/api/update"): frozenset({JSON, "application/octet-stream"}),
    ("POST", "/api/jobs/{jobId}/keys"): frozenset({JSON}),
    ("POST", "/api/jobs/{jobId}/shares"): frozenset({JSON}),
    ("POST", "/api/jobs/{jobId}/unmask"): frozenset({JSON}),
    ("POST", "/api/jobs/{jobId}/close"): frozenset({JSON}),
    ("POST", "/api/jobs/{jobId}/cancel"): frozenset({JSON}),
    ("POST", "/api/jobs/{jobId}/deliveries/retry"): frozenset({JSON}),
    ("POST", "/api/smpc/callback/{jobId}"): frozenset({JSON}),
    ("POST", "/api/ws-ticket"): frozenset({JSON}),
}
# WebSocket handshakes: a browser's Origin is checked on them as on writes (WS_ALLOWED_ORIGINS).
SOCKET_ROUTES = frozenset({("GET", "/ws"), ("GET", "/ws/jobs/{jobId}")})
# Probes answer whatever Host they are sent with (a kubelet's names the pod's address); they tell nothing.
# So does /metrics, which Prometheus scrapes by the pod's address too (with authentication on, it takes a
# viewer or admin token like any read).
ANY_HOST = frozenset({("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")})
# Routes where a client reads a job: it must take part in it.
PARTICIPANT_READS = frozenset(
    {
        ("GET", "/api/jobs/{jobId}/keys"),
        ("GET", "/api/jobs/{jobId}/shares/{clientId}"),
        ("GET", "/api/jobs/{jobId}/unmask"),
        ("GET", "/api/job-status/{jobId}"),
        ("GET", "/api/jobs/{jobId}"),
        ("GET", "/ws/jobs/{jobId}"),
    }
)

PRINCIPAL = web.RequestKey("principal", Principal)
# Set by handlers for the audit trail: the job and the outcome (recorded, duplicate, ...) of a write, and
# whether their Lua script already wrote the audit entry (the update does, to keep one round trip).
AUDIT_JOB = web.RequestKey("audit_job", str)
AUDIT_OUTCOME = web.RequestKey("audit_outcome", str)
AUDITED = web.RequestKey("audited", bool)
# Set when the handler's own log line already says who did what (the recorded update).
AUDIT_LOGGED = web.RequestKey("audit_logged", bool)


def principal(request: web.Request) -> Principal:
    """Who the request acts as (set by the security middleware; ANONYMOUS with authentication off)."""
    found: Principal = request.get(PRINCIPAL, ANONYMOUS)
    return found


def require_self(request: web.Request, client_id: str) -> None:
    """A client token acts only as its own subject."""
    who = principal(request)
    if who.role == "client" and who.sub != client_id:
        raise Forbidden(
            f"This token is for client {who.sub}; it cannot act as {client_id}",
            code="client_mismatch",
            clientId=client_id,
        )


def require_scoped_writer(who: Principal) -> None:
    """A client token writes (reports, registers keys) only to the jobs its `jobs` claim names: without
    it any data holder could join, fill or complete any job."""
    if who.role == "client" and who.authenticated and who.jobs is None:
        raise Forbidden(
            "A client token must name the jobs it may join (the `jobs` claim, e.g. orchestrator token "
            "--role client --jobs 'study-*')",
            code="token_not_scoped",
        )


def require_unscoped(who: Principal, what: str) -> None:
    """Service-wide data (metrics) is not for a token limited to some jobs."""
    if who.jobs is not None and who.authenticated:
        raise Forbidden(f"A token limited to some jobs cannot read {what}", code="job_not_allowed")


def require_job(who: Principal, job_id: str) -> None:
    if not who.may_touch(job_id):
        raise Forbidden(f"This token does not cover job {job_id}", code="job_not_allowed", jobId=job_id)


def authorise_write(request: web.Request, client_id: str, job_id: str) -> None:
    """A write of ``client_id`` to ``job_id``: a client acts only as itself, with a token scoped to jobs
    that include this one."""
    require_self(request, client_id)
    who = principal(request)
    require_scoped_writer(who)
    require_job(who, job_id)
