"""The OpenAPI 3 document of the HTTP API (kept true by tests/test_openapi.py)."""

from __future__ import annotations

from typing import Any

from orchestrator import __version__

# "." and ".." match the pattern but no URL path can carry them as a segment: 400 invalid_id.
_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$", "not": {"enum": [".", ".."]}}
_INSTANCE = {
    "type": "string",
    "description": "Random id of this job instance: a jobId may be used again after its job expired; masks, "
    "Idempotency-Keys and key files are bound to the instance.",
}
_STATUS = {"type": "string", "enum": ["IN_PROGRESS", "AGGREGATING", "COMPLETED", "FAILED", "CANCELLED"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_ERROR = _json(_ref("Error"), "The request was refused; `error.code` says why.")
_UNAVAILABLE = _json(
    _ref("Error"),
    "Redis is unreachable, or did not answer within REDIS_TIMEOUT (a request waits for it once, not once "
    "per operation) (`redis_unavailable`); or Redis answers but refuses writes (`redis_refused`, with "
    "`redisError`: OOM, READONLY, MISCONF, NOREPLICAS, BUSY, LOADING or MASTERDOWN): nothing was stored. Safe "
    "to retry after Retry-After.",
    _RETRY_AFTER,
)
_JOB_ID_PARAM = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}
# The refusals of a request that may create a job (README "Quotas").
_CREATION_LIMITED = _json(
    _ref("Error"),
    "rate_limited: too many writes; or job_quota_exceeded: the request would create a job past the client's or "
    "the IP's job quota (RATE_LIMIT_CLIENT_JOBS, RATE_LIMIT_IP_JOBS per JOB_CREATION_WINDOW); nothing changed. "
    "Retry after Retry-After.",
    _RETRY_AFTER,
)
_TOO_LARGE = _json(
    _ref("Error"),
    "The request was refused; `error.code` says why. job_too_large: the job would keep more than MAX_JOB_BYTES "
    "(its schema, and per client its bookkeeping and its vector; `error.jobBytes`, `error.maxJobBytes`).",
)
_STORAGE_FULL = _json(
    _ref("Error"),
    "storage_full: Redis is nearly full (used_memory at MAX_REDIS_MEMORY_FRACTION of maxmemory, or the new job "
    "would take it there), so no new job is created; updates of existing jobs, reads and cancels still work. "
    "Retry after Retry-After.",
    _RETRY_AFTER,
)


def _ws_operation(summary: str, per_job: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if per_job:
        parameters = [
            _JOB_ID_PARAM,
            {
                "name": "since",
                "in": "query",
                "required": False,
                "description": "The last version the client saw: it gets the events after it, or a snapshot when the "
                "job's history no longer reaches back that far.",
                "schema": {"type": "integer", "minimum": 0},
            },
        ]
    return {
        "summary": summary,
        "description": "A WebSocket (send `Upgrade: websocket`). Messages are JSON: first "
        '`{"type": "snapshot", ...}`, then events `{"type", "jobId", "version", "at", ...}` in version order. '
        'Send the text `ping` to get `{"type": "pong"}`. Close codes: 1001 server shutting down, '
        "1013 the client did not keep up (reconnect with `since`).",
        "parameters": parameters,
        "responses": {
            "101": {"description": "Switching to the WebSocket protocol."},
            "400": _ERROR,
            "403": _json(_ref("Error"), "The Origin is not allowed."),
            "503": _json(_ref("Error"), "This replica has reached its WebSocket connection limit."),
        },
    }


_FEATURE = {
    "type": "object",
    "description": "A feature: the detailed form (featureName, offset, length, fields) or the short one (name).",
    "properties": {
        "featureName": {"type": "string", "minLength": 1, "maxLength": 256},
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "dataType": {"type": "string", "enum": ["BOOLEAN", "NUMERIC", "NOMINAL", "ORDINAL", "CATEGORICAL"]},
        "offset": {"type": "integer", "minimum": 0},
        "length": {"type": "integer", "minimum": 0},
        "fields": {"type": "array", "items": {"type": "string"}},
        "categories": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The declared categories of a NOMINAL/ORDINAL/CATEGORICAL feature.",
        },
        "bounds": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
            "description": "[min, max] of a NUMERIC feature: required by the sum and secure-sum backends.",
        },
        "scale": {
            "type": "integer",
            "minimum": 0,
            "maximum": 12,
            "description": "Decimal places kept of a NUMERIC feature's values (fixed point), default 0.",
        },
    },
    "required": ["dataType"],
    "additionalProperties": True,
}

_JOB_SUMMARY = {
    "type": "object",
    "required": ["jobId", "status", "totalClients", "doneCount", "percentage", "createdAt", "updatedAt", "version"],
    "properties": {
        "jobId": _ID,
        "status": _STATUS,
        "totalClients": {"type": "integer"},
        "doneCount": {"type": "integer"},
        "percentage": {"type": "number"},
        "createdAt": _TIME,
        "updatedAt": _TIME,
        "version": {"type": "integer"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "additionalProperties": True,
            }
        },
    },
    "LegacyNotFound": {
        "type": "object",
        "description": "The original service's 404 shape for job-status, kept for polling clients.",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    },
    "Feature": _FEATURE,
    "UpdateRequest": {
        "type": "object",
        "required": ["jobId", "clientId", "totalClients"],
        "properties": {
            "jobId": _ID,
            "clientId": _ID,
            "totalClients": {
                "oneOf": [
                    {"type": "integer", "minimum": 1, "maximum": 100000},
                    {"type": "string", "pattern": "^[0-9]{1,6}$"},
                ]
            },
            "schema": {"type": "array", "items": _ref("Feature"), "maxItems": 10000, "nullable": True},
            "aggregation": {"type": "string", "enum": ["smpc", "none", "secure-sum", "sum"]},
            "deadline": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
            "vector": {
                "type": "string",
                "format": "byte",
                "description": "sum / secure-sum jobs: the client's (masked) statistics vector, base64 of "
                "little-endian uint64 values.",
            },
            "maxRows": {"type": "integer", "minimum": 1, "description": "sum jobs: the most rows a client counts."},
        },
    },
    "KeyRequest": {
        "type": "object",
        "required": ["clientId", "totalClients", "publicKey"],
        "properties": {
            "clientId": _ID,
            "totalClients": {"type": "integer", "minimum": 2, "maximum": 100000},
            "publicKey": {"type": "string", "format": "byte", "description": "Raw 32-byte X25519 key, base64."},
            "schema": {
                "type": "array",
                "items": _ref("Feature"),
                "description": "Required with the first key (it creates the job).",
            },
            "maxRows": {"type": "integer", "minimum": 1},
            "deadline": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
        },
    },
    "KeyResponse": {
        "type": "object",
        "required": [
            "jobId",
            "clientId",
            "alreadyRegistered",
            "replaced",
            "keyCount",
            "totalClients",
            "complete",
            "version",
        ],
        "properties": {
            "jobId": _ID,
            "clientId": _ID,
            "alreadyRegistered": {"type": "boolean"},
            "replaced": {"type": "boolean", "description": "Another key of this client was replaced."},
            "keyCount": {"type": "integer"},
            "totalClients": {"type": "integer"},
            "complete": {"type": "boolean"},
            "version": {"type": "integer"},
            "instanceId": _INSTANCE,
        },
    },
    "KeyRound": {
        "type": "object",
        "required": [
            "jobId",
            "status",
            "totalClients",
            "maxRows",
            "keyCount",
            "complete",
            "keys",
            "version",
            "instanceId",
        ],
        "properties": {
            "jobId": _ID,
            "instanceId": _INSTANCE,
            "status": _STATUS,
            "totalClients": {"type": "integer"},
            "maxRows": {"type": "integer"},
            "keyCount": {"type": "integer"},
            "complete": {"type": "boolean"},
            "keys": {
                "type": "array",
                "description": "Sorted by clientId.",
                "items": {
                    "type": "object",
                    "required": ["clientId", "publicKey"],
                    "properties": {"clientId": _ID, "publicKey": {"type": "string"}},
                },
            },
            "version": {"type": "integer"},
        },
    },
    "UpdateResponse": {
        "type": "object",
        "required": [
            "message",
            "jobId",
            "clientId",
            "alreadyRecorded",
            "status",
            "doneCount",
            "totalClients",
            "version",
        ],
        "properties": {
            "message": {"type": "string"},
            "jobId": _ID,
            "clientId": _ID,
            "alreadyRecorded": {"type": "boolean"},
            "status": _STATUS,
            "doneCount": {"type": "integer"},
            "totalClients": {"type": "integer"},
            "version": {"type": "integer"},
        },
    },
    "JobStatusResponse": {
        "type": "object",
        "required": ["status", "jobId", "message", "progress", "jobInfo", "version"],
        "properties": {
            "status": _STATUS,
            "jobId": _ID,
            "message": {"type": "string"},
            "version": {"type": "integer"},
            "instanceId": _INSTANCE,
            "failureReason": {"type": "string"},
            "deliveries": {"type": "object", "description": "Per destination: state, attempts, reason, ..."},
            "progress": {
                "type": "object",
                "required": ["doneCount", "totalClients", "percentage"],
                "properties": {
                    "doneCount": {"type": "integer"},
                    "totalClients": {"type": "integer"},
                    "percentage": {"type": "number"},
                },
            },
            "jobInfo": {
                "type": "object",
                "required": ["totalClients", "doneCount", "schema", "finalResult", "updatedClients"],
                "properties": {
                    "totalClients": {"type": "integer"},
                    "doneCount": {"type": "integer"},
                    "schema": {"type": "array", "items": _ref("Feature"), "nullable": True},
                    "finalResult": {"nullable": True},
                    "updatedClients": {"type": "array", "items": {"type": "string"}},
                },
            },
            "aggregatedResults": {"nullable": True, "description": "Per-feature results (COMPLETED only)."},
            "metadata": {
                "type": "object",
                "description": "COMPLETED only.",
                "properties": {
                    "totalFeatures": {"type": "integer"},
                    "totalClients": {"type": "integer"},
                    "completedAt": _NULLABLE_TIME,
                    "doneCount": {"type": "integer"},
                },
            },
        },
    },
    "JobSummary": _JOB_SUMMARY,
    "JobList": {
        "type": "object",
        "required": ["jobs", "nextCursor"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("JobSummary")},
            "nextCursor": {"type": "string", "nullable": True, "description": "Pass as `cursor` for the next page."},
        },
    },
    "Job": {
        "allOf": [
            _ref("JobSummary"),
            {
                "type": "object",
                "required": ["schema", "clients", "aggregatingAt", "completedAt", "failureReason", "finalResult"],
                "properties": {
                    "schema": {"type": "array", "items": _ref("Feature"), "nullable": True},
                    "clients": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["clientId", "reportedAt"],
                            "properties": {"clientId": _ID, "reportedAt": _TIME},
                        },
                    },
                    "aggregatingAt": _NULLABLE_TIME,
                    "completedAt": _NULLABLE_TIME,
                    "failureReason": {"type": "string", "nullable": True},
                    "finalResult": {"nullable": True},
                    "deliveries": {"type": "object"},
                    "instanceId": _INSTANCE,
                },
            },
        ]
    },
    "CancelResponse": {
        "type": "object",
        "required": ["jobId", "status", "alreadyCancelled", "version"],
        "properties": {
            "jobId": _ID,
            "status": {"type": "string", "enum": ["CANCELLED"]},
            "alreadyCancelled": {"type": "boolean"},
            "version": {"type": "integer"},
        },
    },
    "Index": {
        "type": "object",
        "required": ["service", "version", "links"],
        "properties": {
            "service": {"type": "string"},
            "version": {"type": "string"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "redis": {"type": "string"}},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Computations Orchestrator",
        "version": __version__,
        "description": "Coordinates federated statistics jobs: clients report completion, the orchestrator "
        "aggregates when all are done. The /api/update and /api/job-status endpoints keep the original "
        "service's contract. Every request must name an allowed Host (421 host_not_allowed: localhost, "
        "loopback, HOST, PUBLIC_BASE_URL's host, ALLOWED_HOSTS); a write or a WebSocket handshake whose "
        "Origin is another site's, not listed, is 403 origin_not_allowed; a write whose Content-Type is not "
        "its route's is 415 unsupported_media_type. Answered before any route, in the same Error shape, each "
        "closing the connection: 400 bad_request_line, line_too_long or malformed_request for a request that is "
        "not valid HTTP; 408 request_timeout for headers slower than HTTP_HEADER_TIMEOUT or a body slower than "
        "HTTP_BODY_TIMEOUT; 429 too_many_connections past MAX_CONNECTIONS_PER_IP and 503 server_busy when the "
        "process is short of file descriptors (both with Retry-After, as the connection opens). A WebSocket "
        "client's frames must be masked (RFC 6455): an unmasked one closes the socket with 1002.",
    },
    "paths": {
        "/": {
            "get": {
                "summary": "Service name, version and links",
                "responses": {"200": _json(_ref("Index"), "The service.")},
            }
        },
        "/api/update": {
            "post": {
                "summary": "Report that a client finished its part of a job (creates the job on its first update)",
                "description": "A JSON body; or, for a sum / secure-sum job that exists, the vector itself as an "
                "`application/octet-stream` body (little-endian uint64 values) with jobId, clientId and totalClients "
                "in the query string.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("UpdateRequest")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "200": _json(
                        _ref("UpdateResponse"), "Recorded, or already recorded for this client (nothing changed)."
                    ),
                    "400": _TOO_LARGE,
                    "409": _json(
                        _ref("Error"),
                        "totalClients or schema differ from the job's, or the job no longer collects clients.",
                    ),
                    "413": _ERROR,
                    "415": _ERROR,
                    "429": _CREATION_LIMITED,
                    "503": _UNAVAILABLE,
                    "507": _STORAGE_FULL,
                },
            }
        },
        "/api/jobs/{jobId}/keys": {
            "post": {
                "summary": "Register a client's X25519 public key for a secure-sum job (the first creates the job)",
                "parameters": [_JOB_ID_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("KeyRequest")}}},
                "responses": {
                    "200": _json(
                        _ref("KeyResponse"),
                        "This key was registered before (nothing changed), or it replaced the client's earlier key "
                        "(allowed until the round completes).",
                    ),
                    "201": _json(_ref("KeyResponse"), "Registered; `complete` once every client has a key."),
                    "400": _TOO_LARGE,
                    "409": _json(
                        _ref("Error"),
                        "Another key for this client after the round completed, the round is full, the job is not "
                        "a secure-sum job, "
                        "not collecting, or has other totalClients, schema or maxRows.",
                    ),
                    "413": _ERROR,
                    "415": _ERROR,
                    "429": _CREATION_LIMITED,
                    "503": _UNAVAILABLE,
                    "507": _STORAGE_FULL,
                },
            },
            "get": {
                "summary": "The key round of a secure-sum job: every registered public key",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json(_ref("KeyRound"), "The keys so far; `complete` once every client has one."),
                    "400": _ERROR,
                    "404": _ERROR,
                    "409": _json(_ref("Error"), "Not a secure-sum job."),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/api/job-status/{jobId}": {
            "get": {
                "summary": "A job's status in the original service's shape",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json(_ref("JobStatusResponse"), "The job."),
                    "404": _json(_ref("LegacyNotFound"), "No such job."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/jobs": {
            "get": {
                "summary": "Jobs, newest first, paginated",
                "parameters": [
                    {"name": "status", "in": "query", "required": False, "schema": _STATUS},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_ref("JobList"), "A page of jobs."), "400": _ERROR, "503": _UNAVAILABLE},
            }
        },
        "/api/jobs/{jobId}": {
            "get": {
                "summary": "The full job: clients with the time each reported, status, timestamps, version",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json(_ref("Job"), "The job."),
                    "400": _ERROR,
                    "404": _ERROR,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/jobs/{jobId}/cancel": {
            "post": {
                "summary": "Cancel a job that has not finished (IN_PROGRESS or AGGREGATING)",
                "parameters": [_JOB_ID_PARAM],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 500}}}
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("CancelResponse"), "Cancelled now, or already (alreadyCancelled)."),
                    "400": _ERROR,
                    "404": _ERROR,
                    "409": _json(_ref("Error"), "The job is already COMPLETED or FAILED."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/jobs/{jobId}/deliveries/retry": {
            "post": {
                "summary": "Queue again the job's dead-lettered result deliveries",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["jobId", "retried"],
                            "properties": {"jobId": _ID, "retried": {"type": "array", "items": {"type": "string"}}},
                        },
                        "The destinations queued again (none if nothing had failed).",
                    ),
                    "400": _ERROR,
                    "404": _ERROR,
                    "409": _json(_ref("Error"), "The job is not COMPLETED."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/smpc/callback/{jobId}": {
            "post": {
                "summary": "The SMPC coordinator pushing a job's result to the returnUrl it was given",
                "parameters": [
                    _JOB_ID_PARAM,
                    {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "jobId": {"type": "string"},
                                    "status": {"type": "string", "enum": ["COMPLETED", "FAILED"]},
                                    "computationOutput": {"type": "array"},
                                    "message": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"jobId": _ID, "received": {"type": "boolean"}}},
                        "Kept; the job's worker finishes it.",
                    ),
                    "400": _ERROR,
                    "403": _json(_ref("Error"), "Not the token given for this job."),
                    "404": _ERROR,
                    "409": _json(_ref("Error"), "The job is not aggregating (already finished)."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document.")}}
        },
        "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": _json(_ref("Health"), "Alive.")}}},
        "/readyz": {
            "get": {
                "summary": "Redis is reachable",
                "responses": {
                    "200": _json(_ref("Health"), "Ready."),
                    "503": _json(_ref("Health"), "Redis unreachable.", _RETRY_AFTER),
                },
            }
        },
        "/dashboard": {
            "get": {
                "summary": "The live dashboard (HTML; its files are under /static/)",
                "responses": {
                    "200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/ws": {
            "get": _ws_operation(
                "Every job's events: a snapshot of the recent jobs, then each event as it happens", False
            )
        },
        "/ws/jobs/{jobId}": {
            "get": _ws_operation("One job's events: a snapshot (or the missed events) then each event", True)
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Claims: sub, role (client, viewer, admin), exp, optional jobs (job-id patterns). "
                "Needed when the service has authentication on (AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE).",
            }
        },
    },
}

OPENAPI["paths"].update(
    {
        "/api/whoami": {
            "get": {
                "summary": "Whether the service wants a token, and who a given token says the caller is",
                "responses": {"200": _json(_ref("WhoAmI"), "Always; `authenticated` says whether the token is good.")},
            }
        },
        "/api/ws-ticket": {
            "post": {
                "summary": "A single-use ticket to open a WebSocket as the caller (`?ticket=`), for browsers",
                "responses": {
                    "201": _json(_ref("Ticket"), "Valid for `expiresIn` seconds, once."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/audit": {
            "get": {
                "summary": "The audit trail of state-changing requests, newest first (admins)",
                "parameters": [
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
                    {"name": "before", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(_ref("AuditPage"), "Entries; pass `nextCursor` as `before` for older ones."),
                    "400": _ERROR,
                    "503": _UNAVAILABLE,
                },
            }
        },
    }
)
SCHEMAS.update(
    {
        "WhoAmI": {
            "type": "object",
            "required": ["authRequired", "authenticated"],
            "properties": {
                "authRequired": {"type": "boolean"},
                "authenticated": {"type": "boolean"},
                "sub": {"type": "string"},
                "role": {"type": "string"},
                "jobs": {"type": "array", "items": {"type": "string"}, "nullable": True},
                "reason": {"type": "string"},
            },
        },
        "Ticket": {
            "type": "object",
            "required": ["ticket", "expiresIn"],
            "properties": {"ticket": {"type": "string"}, "expiresIn": {"type": "number"}},
        },
        "AuditPage": {
            "type": "object",
            "required": ["entries", "nextCursor"],
            "properties": {
                "entries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "at", "who", "action"],
                        "properties": {
                            "id": {"type": "string"},
                            "at": {"type": "string"},
                            "who": {"type": "string"},
                            "role": {"type": "string"},
                            "ip": {"type": "string"},
                            "action": {"type": "string"},
                            "job": {"type": "string"},
                            "client": {"type": "string"},
                            "status": {"type": "string"},
                            "outcome": {"type": "string"},
                        },
                    },
                },
                "nextCursor": {"type": "string", "nullable": True},
            },
        },
    }
)


def _secure(document: dict[str, Any]) -> None:
    """Mark each operation with what security.policy requires of it, and the refusals that come with it."""
    from orchestrator.security.policy import ACCESS, ANY_HOST, BODY_TYPES

    for (method, path), roles in ACCESS.items():
        operation = document["paths"][path][method.lower()]
        responses = operation["responses"]
        if (method, path) not in ANY_HOST:
            responses.setdefault("421", _json(_ref("Error"), "The Host names no host this service answers to."))
        if roles is None:
            operation["security"] = []
        else:
            operation["security"] = [{"bearerAuth": []}]
            operation["description"] = (
                operation.get("description", "") + f" Roles: {', '.join(sorted(roles))}."
            ).strip()
            responses.setdefault("401", _json(_ref("Error"), "No token, or one that is forged, expired or malformed."))
            responses.setdefault(
                "403", _json(_ref("Error"), "The token's role, subject or job patterns do not allow this.")
            )
        if method == "POST":
            responses.setdefault("429", _json(_ref("Error"), "Too many writes: retry after Retry-After.", _RETRY_AFTER))
            refused = responses.get("403", _json(_ref("Error"), "Refused."))
            origin = " Or (origin_not_allowed) a browser's Origin is another site's, not listed."
            responses["403"] = {**refused, "description": refused["description"] + origin}
            responses.setdefault(
                "408",
                _json(_ref("Error"), "The body did not arrive within HTTP_BODY_TIMEOUT (request_timeout)."),
            )
            types = " or ".join(sorted(BODY_TYPES[method, path]))
            responses.setdefault("415", _json(_ref("Error"), f"The body is not {types} (unsupported_media_type)."))
        if "{jobId}" in path:
            # A jobId the router cannot take (one with braces, say) is a plain 404.
            responses.setdefault("404", _json(_ref("Error"), "No such route or job."))
    status_404 = document["paths"]["/api/job-status/{jobId}"]["get"]["responses"]["404"]
    status_404["content"]["application/json"]["schema"] = {"oneOf": [_ref("LegacyNotFound"), _ref("Error")]}
    for path in ("/ws", "/ws/jobs/{jobId}"):
        parameters = document["paths"][path]["get"]["parameters"]
        parameters.append(
            {
                "name": "ticket",
                "in": "query",
                "required": False,
                "description": "A ticket from POST /api/ws-ticket (browsers cannot send an Authorization header).",
                "schema": {"type": "string"},
            }
        )
        document["paths"][path]["get"]["responses"]["429"] = _json(_ref("Error"), "Too many sockets for this token.")


_secure(OPENAPI)
