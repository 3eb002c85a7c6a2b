"""Every JSON body the HTTP API answers with, as msgspec Structs: the OpenAPI document's response schemas are
generated from them (orchestrator.openapi), and tests check that what the service sends conforms to them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from orchestrator.models import JobStatus
from orchestrator.wire.features import Feature

# "." and ".." match the pattern but no URL path can carry them as a segment: a request naming one is refused.
JobId = Annotated[str, Meta(pattern="^[A-Za-z0-9._:-]{1,128}$", description="A job or client id.")]
InstanceId = Annotated[
    str,
    Meta(
        description="Random id of this job instance: a jobId may be used again after its job expired; masks, "
        "Idempotency-Keys and key files are bound to the instance ('' for a job stored before instances existed)."
    ),
]
Time = Annotated[str, Meta(description="An ISO 8601 UTC time with milliseconds, e.g. 2026-11-29T10:00:00.123Z.")]
Version = Annotated[int, Meta(ge=0, description="The job's version: a per-job counter bumped by every event.")]
Count = Annotated[int, Meta(ge=0)]
Percentage = Annotated[float, Meta(ge=0, description="doneCount of totalClients, in percent (2 decimals).")]
# The stored schema, as it was sent (canonical JSON: its features, and what else they carried). Spliced into
# responses as stored text (serializers.RawJSON), never re-encoded.
Schema = Annotated[list[Feature] | None, Meta(description="The job's schema as stored; null when it has none.")]
Deliveries = Annotated[
    dict[str, dict[str, Any]],
    Meta(description="Per destination (api, file): state (pending, delivered, failed), attempts, reason, ..."),
]


class Wire(msgspec.Struct, rename="camel", kw_only=True):
    """Base of the API's JSON objects: camelCase names."""


class ErrorDetail(Wire):
    """What went wrong: a stable `code`, a message for people, and details (the `field` at fault, ...)."""

    code: Annotated[str, Meta(description="Stable, machine-readable: what clients branch on.")]
    message: str
    field: str | UnsetType | None = UNSET
    job_id: str | UnsetType = UNSET
    retry_after: Annotated[float, Meta(description="Seconds, as in the Retry-After header.")] | UnsetType = UNSET


class Error(Wire):
    """The error body of every refusal (any other members of `error` are details of its code)."""

    error: ErrorDetail


class LegacyNotFound(Wire):
    """The original service's 404 shape for job-status, kept for polling clients."""

    error: Annotated[str, Meta(description="Unknown jobId J")]
    code: Literal["job_not_found"] | UnsetType = UNSET


class Index(Wire):
    service: str
    version: str
    links: dict[str, str]


class Health(Wire):
    status: Annotated[str, Meta(description="ok (alive), ready, or unavailable.")]
    redis: Annotated[str, Meta(description="ok, or why Redis is not reachable.")] | UnsetType = UNSET


class UpdateResponse(Wire):
    """The original's `message`, plus the job's state after this update."""

    message: Annotated[str, Meta(description="Update for job J, client C recorded.")]
    job_id: JobId
    client_id: JobId
    already_recorded: Annotated[bool, Meta(description="This client's update was recorded before: nothing changed.")]
    status: JobStatus
    done_count: Count
    total_clients: Count
    version: Version


class Progress(Wire):
    done_count: Count
    total_clients: Count
    percentage: Percentage


class JobInfo(Wire):
    """The original's job hash, as it showed it."""

    total_clients: Count
    done_count: Count
    schema: Schema
    final_result: Annotated[Any, Meta(description="The stored result (null until COMPLETED).")]
    updated_clients: Annotated[list[str], Meta(description="The clients that reported, in reporting order.")]


class KeyRoundSummary(Wire):
    """A secure-sum job's key round: how many clients registered a public key."""

    key_count: Count
    total_clients: Count
    complete: bool


class ResultMetadata(Wire):
    """Of a COMPLETED job's result (what else the result carries is kept as it is)."""

    total_features: Count | UnsetType = UNSET
    total_clients: Count | UnsetType = UNSET
    completed_at: Time | UnsetType | None = UNSET
    done_count: Count | UnsetType = UNSET
    aggregation: str | UnsetType | None = UNSET


class JobStatusResponse(Wire):
    """A job in the original service's job-status shape, plus additive fields."""

    status: JobStatus
    job_id: JobId
    message: Annotated[str, Meta(description="Job J is in progress (doneCount=2/3)., Job J is completed., ...")]
    progress: Progress
    version: Version
    instance_id: InstanceId
    job_info: JobInfo
    failure_reason: Annotated[str, Meta(description="FAILED or CANCELLED: why.")] | UnsetType = UNSET
    deliveries: Deliveries | UnsetType = UNSET
    key_round: KeyRoundSummary | UnsetType = UNSET
    aggregated_results: Annotated[Any, Meta(description="Per-feature results (COMPLETED only).")] = UNSET
    metadata: Annotated[ResultMetadata, Meta(description="COMPLETED only.")] | UnsetType = UNSET


class JobSummary(Wire):
    """A job in listings and the /ws snapshot: never its schema or result, which may be megabytes."""

    job_id: JobId
    status: JobStatus
    total_clients: Count
    done_count: Count
    percentage: Percentage
    created_at: Time
    updated_at: Time
    version: Version


class ClientReport(Wire):
    client_id: JobId
    reported_at: Time


class Job(JobSummary):
    """The full job: its summary, schema, clients with the time each reported, timestamps and result."""

    schema: Schema
    clients: Annotated[list[ClientReport], Meta(description="In reporting order.")]
    aggregating_at: Time | None
    completed_at: Time | None
    failure_reason: str | None
    final_result: Annotated[Any, Meta(description="The stored result (null until COMPLETED).")]
    deliveries: Deliveries
    aggregation: Annotated[str | None, Meta(description="The aggregation backend the job asked for.")]
    instance_id: InstanceId
    key_round: KeyRoundSummary | UnsetType = UNSET


class JobList(Wire):
    jobs: list[JobSummary]
    next_cursor: Annotated[str | None, Meta(description="Pass as `cursor` for the next page.")]


class CancelResponse(Wire):
    job_id: JobId
    status: Literal["CANCELLED"]
    already_cancelled: Annotated[bool, Meta(description="The job was cancelled before: nothing changed.")]
    version: Version


class RetryResponse(Wire):
    job_id: JobId
    retried: Annotated[list[str], Meta(description="The destinations queued again.")]


class CallbackAck(Wire):
    job_id: JobId
    received: Literal[True]


class KeyResponse(Wire):
    job_id: JobId
    client_id: JobId
    already_registered: Annotated[bool, Meta(description="This key was registered before: nothing changed.")]
    replaced: Annotated[bool, Meta(description="Another key of this client was replaced.")]
    key_count: Count
    total_clients: Count
    complete: Annotated[bool, Meta(description="Every client has registered a key.")]
    version: Version
    instance_id: InstanceId


class PublicKey(Wire):
    client_id: JobId
    public_key: Annotated[str, Meta(description="Raw 32-byte X25519 key, base64.")]


class KeyRound(Wire):
    job_id: JobId
    instance_id: InstanceId
    status: JobStatus
    total_clients: Count
    max_rows: Count
    key_count: Count
    complete: bool
    keys: Annotated[list[PublicKey], Meta(description="Sorted by clientId.")]
    version: Version


class WhoAmI(Wire):
    auth_required: bool
    authenticated: Annotated[bool, Meta(description="The request carried a valid token.")]
    sub: str | UnsetType = UNSET
    role: Literal["client", "viewer", "admin"] | UnsetType = UNSET
    jobs: Annotated[list[str] | None, Meta(description="The token's job-id patterns; null: every job.")] | UnsetType = (
        UNSET
    )
    reason: Annotated[str, Meta(description="Why the token given is not valid.")] | UnsetType = UNSET


class Ticket(Wire):
    ticket: str
    expires_in: Annotated[float, Meta(gt=0, description="Seconds.")]


class AuditEntry(Wire):
    id: Annotated[str, Meta(description="The entry's id: pass the last one as `before` for older ones.")]
    at: str
    who: str
    action: Annotated[str, Meta(description="METHOD /path")]
    role: str | UnsetType = UNSET
    ip: str | UnsetType = UNSET
    job: str | UnsetType = UNSET
    client: str | UnsetType = UNSET
    status: Annotated[str, Meta(description="The HTTP status answered.")] | UnsetType = UNSET
    outcome: str | UnsetType = UNSET


class AuditPage(Wire):
    entries: list[AuditEntry]
    next_cursor: Annotated[str | None, Meta(description="Pass as `before` for older entries.")]
