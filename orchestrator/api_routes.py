"""The route table: every HTTP route, its handler, and what the OpenAPI document says of it (orchestrator.openapi
generates the document from this table and the wire models; routes.setup_routes registers the handlers).

Who may call a route, and the refusals that come with that (401, 403, 421, the writes' 408/415/429), are not
repeated here: the document takes them from security.policy, the tables the security middleware enforces.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from orchestrator.models import JobStatus
from orchestrator.route_spec import (
    BINARY,
    CREATION_LIMITED,
    ERROR,
    JOB_ID,
    JOB_READ,
    JSON,
    SINCE,
    STORAGE_FULL,
    TOO_LARGE,
    UNAVAILABLE,
    Param,
    Reply,
    Route,
    ref,
    socket,
)
from orchestrator.wire import responses as r
from orchestrator.wire.events import AllSocketMessage, JobSocketMessage
from orchestrator.wire.requests import CallbackBody, CancelBody, KeyBody, SharesBody, UnmaskBody, UpdateBody

ROUTES: tuple[Route, ...] = (
    Route("GET", "/", "views:index", "Service name, version and links", {200: Reply("The service.", r.Index)}),
    Route(
        "POST",
        "/api/update",
        "views:update",
        "Report that a client finished its part of a job (creates the job on its first update)",
        {
            200: Reply("Recorded, or already recorded for this client (nothing changed).", r.UpdateResponse),
            400: TOO_LARGE,
            409: Reply("totalClients or schema differ from the job's, or the job no longer collects clients."),
            413: ERROR,
            415: ERROR,
            429: CREATION_LIMITED,
            503: UNAVAILABLE,
            507: STORAGE_FULL,
        },
        description="A JSON body; or, for a sum / secure-sum job that exists, the vector itself as an "
        "`application/octet-stream` body (little-endian uint64 values) with jobId, clientId and totalClients "
        "in the query string.",
        body={JSON: UpdateBody, "application/octet-stream": BINARY},
    ),
    Route(
        "GET",
        "/api/job-status/{jobId}",
        "views:job_status",
        "A job's status in the original service's shape",
        {
            200: Reply("The job.", r.JobStatusResponse),
            # msgspec renders no union of untagged Structs: this one is written out.
            404: Reply("No such job.", {"oneOf": [ref("LegacyNotFound"), ref("Error")]}),
            503: UNAVAILABLE,
        },
        params=(JOB_ID,),
    ),
    Route(
        "GET",
        "/api/jobs",
        "views:list_jobs",
        "Jobs, newest first, paginated",
        {200: Reply("A page of jobs.", r.JobList), 400: ERROR, 503: UNAVAILABLE},
        params=(
            Param("status", JobStatus),
            Param("limit", Annotated[int, Meta(ge=1, le=500)], description="Default 50."),
            Param("cursor", str, description="A page's nextCursor."),
        ),
    ),
    Route(
        "GET",
        "/api/jobs/{jobId}",
        "views:get_job",
        "The full job: clients with the time each reported, status, timestamps, version",
        {200: Reply("The job.", r.Job), **JOB_READ},
        params=(JOB_ID,),
    ),
    Route(
        "POST",
        "/api/jobs/{jobId}/cancel",
        "views:cancel_job",
        "Cancel a job that has not finished (IN_PROGRESS or AGGREGATING)",
        {
            200: Reply("Cancelled now, or already (alreadyCancelled).", r.CancelResponse),
            **JOB_READ,
            409: Reply("The job is already COMPLETED or FAILED."),
        },
        body={JSON: CancelBody},
        body_required=False,
        params=(JOB_ID,),
    ),
    Route(
        "POST",
        "/api/jobs/{jobId}/close",
        "views:close_job",
        "Close collection now, by the deadline's rule (admins)",
        {
            200: Reply(
                "Closed: with at least minClients reported the job aggregates them, with fewer it FAILED; a secure "
                "sum closed its round in progress (the same rule) and opened the next.",
                r.CloseResponse,
            ),
            **JOB_READ,
            409: Reply("The job is no longer collecting."),
        },
        body={JSON: CancelBody},
        body_required=False,
        params=(JOB_ID,),
    ),
    Route(
        "POST",
        "/api/jobs/{jobId}/keys",
        "securesum.views:register_key",
        "Register a client's X25519 public key for a secure-sum job (the first creates the job)",
        {
            200: Reply(
                "This key was registered before (nothing changed), or it replaced the client's earlier key "
                "(allowed until the round completes).",
                r.KeyResponse,
            ),
            201: Reply("Registered; `complete` once every client has a key.", r.KeyResponse),
            400: TOO_LARGE,
            409: Reply(
                "Another key for this client after the round completed, the round is full, the job is not a "
                "secure-sum job, not collecting, or has other totalClients, schema or maxRows."
            ),
            413: ERROR,
            415: ERROR,
            429: CREATION_LIMITED,
            503: UNAVAILABLE,
            507: STORAGE_FULL,
        },
        body={JSON: KeyBody},
        params=(JOB_ID,),
    ),
    Route(
        "GET",
        "/api/jobs/{jobId}/keys",
        "securesum.views:get_keys",
        "The key round of a secure-sum job: every registered public key",
        {
            200: Reply("The keys so far; `complete` once every client has one.", r.KeyRound),
            **JOB_READ,
            409: Reply("Not a secure-sum job."),
        },
        params=(JOB_ID,),
    ),
    Route(
        "POST",
        "/api/jobs/{jobId}/shares",
        "securesum.views:post_shares",
        "The shares round of a secure sum: a client's share bundles, one sealed for each member of the keys round",
        {
            200: Reply("These very bundles were posted before (nothing changed).", r.RoundAnswer),
            201: Reply("Kept for their recipients.", r.RoundAnswer),
            400: ERROR,
            **JOB_READ,
            409: Reply("Not in the shares round, other bundles posted before, or the client was dropped."),
            413: ERROR,
            415: ERROR,
        },
        body={JSON: SharesBody},
        params=(JOB_ID,),
    ),
    Route(
        "GET",
        "/api/jobs/{jobId}/shares/{clientId}",
        "securesum.views:get_shares",
        "The share bundles sealed for one client by the members of U2 (once the shares round closed)",
        {200: Reply("The bundles.", r.ShareInbox), **JOB_READ, 409: Reply("The shares round is still open.")},
        params=(JOB_ID, Param("clientId", str, where="path", required=True)),
    ),
    Route(
        "GET",
        "/api/jobs/{jobId}/unmask",
        "securesum.views:get_unmask",
        "What the unmask round of a secure sum asks each survivor",
        {200: Reply("The survivors and the dropped.", r.UnmaskRequest), **JOB_READ, 409: Reply("Not there yet.")},
        params=(JOB_ID,),
    ),
    Route(
        "POST",
        "/api/jobs/{jobId}/unmask",
        "securesum.views:post_unmask",
        "A survivor's shares for the unmask round",
        {
            200: Reply("This very answer was posted before (nothing changed).", r.RoundAnswer),
            201: Reply(
                "Kept; the job aggregates once every survivor answered (or at the round's deadline).", r.RoundAnswer
            ),
            400: ERROR,
            **JOB_READ,
            409: Reply("Not in the unmask round, another answer posted before, or the client sent no counted input."),
            413: ERROR,
            415: ERROR,
        },
        body={JSON: UnmaskBody},
        params=(JOB_ID,),
    ),
    Route(
        "POST",
        "/api/smpc/callback/{jobId}",
        "views:smpc_callback",
        "The SMPC coordinator pushing a job's result to the returnUrl it was given",
        {
            200: Reply("Kept; the job's worker finishes it.", r.CallbackAck),
            **JOB_READ,
            403: Reply("Not the token given for this job."),
            409: Reply("The job is not aggregating (already finished)."),
        },
        body={JSON: CallbackBody},
        params=(JOB_ID, Param("token", str, required=True)),
    ),
    Route(
        "POST",
        "/api/jobs/{jobId}/deliveries/retry",
        "views:retry_deliveries",
        "Queue again the job's dead-lettered result deliveries",
        {
            200: Reply("The destinations queued again (none if nothing had failed).", r.RetryResponse),
            **JOB_READ,
            409: Reply("The job is not COMPLETED."),
        },
        params=(JOB_ID,),
    ),
    Route(
        "GET", "/api/openapi.json", "views:openapi", "This document", {200: Reply("OpenAPI document.", dict[str, Any])}
    ),
    Route(
        "GET",
        "/api/whoami",
        "security.views:whoami",
        "Whether the service wants a token, and who a given token says the caller is",
        {200: Reply("Always; `authenticated` says whether the token is good.", r.WhoAmI)},
    ),
    Route(
        "POST",
        "/api/ws-ticket",
        "security.views:ws_ticket",
        "A single-use ticket to open a WebSocket as the caller (`?ticket=`), for browsers",
        {201: Reply("Valid for `expiresIn` seconds, once.", r.Ticket), 503: UNAVAILABLE},
    ),
    Route(
        "GET",
        "/api/audit",
        "security.views:audit_entries",
        "The audit trail of state-changing requests, newest first (admins)",
        {
            200: Reply("Entries; pass `nextCursor` as `before` for older ones.", r.AuditPage),
            400: ERROR,
            503: UNAVAILABLE,
        },
        params=(Param("limit", int, description="Default 100, at most 500."), Param("before", str)),
    ),
    Route("GET", "/healthz", "views:healthz", "The process is alive", {200: Reply("Alive.", r.Health)}),
    Route(
        "GET",
        "/readyz",
        "views:readyz",
        "Redis is reachable",
        {200: Reply("Ready.", r.Health), 503: Reply("Redis unreachable.", r.Health, retry_after=True)},
    ),
    Route(
        "GET",
        "/metrics",
        "views:metrics",
        "Prometheus metrics",
        {200: Reply("Prometheus text format.", str, "text/plain")},
    ),
    socket(
        "/ws",
        "ws:all_socket",
        "Every job's events: a snapshot of the recent jobs, then each event as it happens",
        "AllSocketMessage",
    ),
    socket(
        "/ws/jobs/{jobId}",
        "ws:job_socket",
        "One job's events: a snapshot (or the missed events) then each event",
        "JobSocketMessage",
        JOB_ID,
        SINCE,
    ),
    Route(
        "GET",
        "/dashboard",
        "views:dashboard",
        "The live dashboard (HTML; its files are under /static/)",
        {200: Reply("HTML page.", str, "text/html")},
    ),
)
# Components no route names by model: the WebSockets' messages (OpenAPI has no operation for a socket's
# frames), and what a written-out schema refers to.
COMPONENTS: dict[str, Any] = {
    "AllSocketMessage": AllSocketMessage,
    "JobSocketMessage": JobSocketMessage,
    "LegacyNotFound": r.LegacyNotFound,
}
