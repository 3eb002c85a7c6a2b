"""The route table's vocabulary: a route, its parameters and documented replies, and the replies many routes
share (orchestrator.api_routes lists the routes; orchestrator.openapi renders them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from msgspec import Meta

from orchestrator.wire import responses as r

JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """One documented response: its description, body model (None: no body; a dict: a JSON Schema as is)."""

    description: str
    model: Any = r.Error
    media: str = JSON
    retry_after: bool = False


@dataclass(frozen=True)
class Param:
    name: str
    model: Any
    where: str = "query"
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str  # "module:function" under orchestrator (resolved by routes.setup_routes: no import cycle)
    summary: str
    replies: Mapping[int, Reply]
    description: str = ""
    body: Mapping[str, Any] | None = None  # media type -> model
    body_required: bool = True
    params: tuple[Param, ...] = field(default=())


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


BINARY = {"type": "string", "format": "binary"}
ERROR = Reply("The request was refused; `error.code` says why.")
UNAVAILABLE = Reply(
    "Redis is unreachable, or did not answer within REDIS_TIMEOUT (a request waits for it once, not once "
    "per operation) (`redis_unavailable`); or Redis answers but refuses writes (`redis_refused`, with "
    "`redisError`: OOM, READONLY, MISCONF, NOREPLICAS, BUSY, LOADING or MASTERDOWN): nothing was stored. Safe "
    "to retry after Retry-After.",
    retry_after=True,
)
# The refusals of a request that may create a job (README "Quotas").
CREATION_LIMITED = Reply(
    "rate_limited: too many writes; or job_quota_exceeded: the request would create a job past the client's or "
    "the IP's job quota (RATE_LIMIT_CLIENT_JOBS, RATE_LIMIT_IP_JOBS per JOB_CREATION_WINDOW); nothing changed. "
    "Retry after Retry-After.",
    retry_after=True,
)
TOO_LARGE = Reply(
    "The request was refused; `error.code` says why. job_too_large: the job would keep more than MAX_JOB_BYTES "
    "(its schema, and per client its bookkeeping and its vector; `error.jobBytes`, `error.maxJobBytes`). "
    "Rules between fields (a feature's offset and length together; fields as many as length and distinct; "
    "categories distinct and numOfNotNull plus one count each; bounds min <= max; features' spans that do not "
    "overlap, names distinct) are checked too: invalid_schema naming the feature.",
)
STORAGE_FULL = Reply(
    "storage_full: Redis is nearly full (used_memory at MAX_REDIS_MEMORY_FRACTION of maxmemory, or the new job "
    "would take it there), so no new job is created; updates of existing jobs, reads and cancels still work. "
    "Retry after Retry-After.",
    retry_after=True,
)
JOB_ID = Param("jobId", str, "path", True)
SINCE = Param(
    "since",
    Annotated[int, Meta(ge=0)],
    description="The last version the client saw: it gets the events after it, or a snapshot when the job's "
    "history no longer reaches back that far.",
)
TICKET = Param(
    "ticket", str, description="A ticket from POST /api/ws-ticket (browsers cannot send an Authorization header)."
)
JOB_READ = {400: ERROR, 404: ERROR, 503: UNAVAILABLE}


def socket(path: str, handler: str, summary: str, messages: str, *params: Param) -> Route:
    return Route(
        "GET",
        path,
        handler,
        summary,
        {
            101: Reply("Switching to the WebSocket protocol.", None),
            400: ERROR,
            403: Reply("The Origin is not allowed."),
            429: Reply("Too many sockets for this token."),
            503: Reply("This replica has reached its WebSocket connection limit."),
        },
        description="A WebSocket (send `Upgrade: websocket`). Messages are JSON: first "
        '`{"type": "snapshot", ...}`, then events `{"type", "jobId", "version", "at", ...}` in version order '
        f"(components {messages}). "
        'Send the text `ping` to get `{"type": "pong"}`. Close codes: 1001 server shutting down, '
        "1013 the client did not keep up (reconnect with `since`).",
        params=(*params, TICKET),
    )
