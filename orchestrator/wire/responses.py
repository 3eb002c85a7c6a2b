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
    min_clients: Annotated[Count, Meta(description="k of n: the reports the job needs at its deadline.")]
    job_info: JobInfo
    failure_reason: Annotated[str, Meta(description="FAILED or CANCELLED: why.")] | UnsetType = UNSET
    deliveries: Deliveries | UnsetType = UNSET
    key_round: KeyRoundSummary | UnsetType = UNSET
    aggregated_results: Annotated[Any, Meta(description="Per-feature results (COMPLETED only).")] = UNSET
    metadata: Annotated[ResultMetadata, Meta(description="COMPLETED only.")] | UnsetType = UNSET
    contributors: Annotated[list[str], Meta(description="COMPLETED: the clients whose data the result holds.")] | (
        UnsetType
    ) = UNSET
    missing_clients: (
        Annotated[list[str], Meta(description="COMPLETED: the clients known by id whose data it does not hold.")]
        | UnsetType
    ) = UNSET
    missing_count: Annotated[Count, Meta(description="COMPLETED: totalClients minus the contributors.")] | (
        UnsetType
    ) = UNSET


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


Round = Literal["collect", "keys", "shares", "inputs", "unmask", "done"]


class DroppedClient(Wire):
    client_id: JobId
    round: Annotated[Round, Meta(description="The secure-sum round it did not answer.")]


class Participation(Wire):
    """Who the job waits for (in its round in progress, for a secure sum), until when, and who dropped out."""

    min_clients: Count
    round: Annotated[
        Round,
        Meta(description="collect (any backend but secure-sum, still collecting), a secure sum's round, or done."),
    ]
    round_deadline: Annotated[Time | None, Meta(description="When the round in progress closes.")]
    deadline: Annotated[Time | None, Meta(description="When collection (a secure sum: its keys round) closes.")]
    expected: Annotated[
        list[str] | None, Meta(description="Whom the round waits on, when known by id (null: not known yet).")
    ]
    answered: Annotated[list[str], Meta(description="Who answered the round in progress (the reporters).")]
    waiting_for: Annotated[list[str], Meta(description="expected minus answered, while collecting.")]
    waiting_count: Annotated[Count, Meta(description="How many answers the round still waits for.")]
    dropped: list[DroppedClient]
    closed_by: Annotated[
        Literal["all", "deadline", "timeout", "admin"] | None,
        Meta(description="What closed collection: every client answered, the deadline, a round timeout, an admin."),
    ]


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
    min_clients: Count
    deadline: Time | None
    participation: Participation
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
    public_key: Annotated[str, Meta(description="Mask agreement: raw 32-byte X25519 key, base64.")]
    encryption_key: Annotated[str, Meta(description="Share encryption: raw 32-byte X25519 key, base64.")]


SecureRound = Literal["keys", "shares", "inputs", "unmask", "done"]


class KeyRound(Wire):
    job_id: JobId
    instance_id: InstanceId
    status: JobStatus
    total_clients: Count
    min_clients: Count
    threshold: Annotated[Count, Meta(description="Shares that rebuild a secret: minClients.")]
    max_rows: Count
    round: Annotated[SecureRound, Meta(description="The round in progress.")]
    round_deadline: Annotated[Time | None, Meta(description="When the round in progress closes.")]
    key_count: Count
    complete: Annotated[bool, Meta(description="The keys round has closed: `participants` (U1) is fixed.")]
    participants: Annotated[list[str], Meta(description="U1, sorted (empty until the keys round closes).")]
    keys: Annotated[list[PublicKey], Meta(description="Sorted by clientId.")]
    version: Version


class SealedShare(Wire):
    from_: Annotated[JobId, Meta(description="The member of U2 that sealed it.")] = msgspec.field(name="from")
    ciphertext: str


class ShareInbox(Wire):
    """The bundles sealed for one client by the members of U2 (the shares round has closed)."""

    job_id: JobId
    client_id: JobId
    instance_id: InstanceId
    round: SecureRound
    threshold: Count
    participants: Annotated[list[str], Meta(description="U1, sorted: a share's index is its holder's place.")]
    sharers: Annotated[list[str], Meta(description="U2: the clients every input must be masked with.")]
    shares: list[SealedShare]


class UnmaskRequest(Wire):
    """What the unmask round asks each survivor (no client is in both lists)."""

    job_id: JobId
    instance_id: InstanceId
    round: SecureRound
    status: JobStatus
    threshold: Count
    survivors: Annotated[list[str], Meta(description="U3: send a share of each one's self-mask seed.")]
    dropped: Annotated[list[str], Meta(description="U2 minus U3: send a share of each one's mask key.")]
    answered: list[str]


class RoundAnswer(Wire):
    job_id: JobId
    client_id: JobId
    already_posted: Annotated[bool, Meta(description="This very answer was posted before: nothing changed.")]
    count: Annotated[Count, Meta(description="Answers the round has now.")]
    expected: Annotated[Count, Meta(description="Answers it waits for.")]
    status: JobStatus
    version: Version


class CloseResponse(Wire):
    job_id: JobId
    status: JobStatus
    outcome: Annotated[
        Literal["aggregating", "failed", "next"],
        Meta(description="Aggregating the reporters, failed (fewer than minClients), or a secure sum's next round."),
    ]
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
