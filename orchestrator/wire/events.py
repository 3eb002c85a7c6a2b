"""Every message the WebSockets send: the events the Lua scripts publish on the events channel (and keep in
each job's history), tagged by `type`, and the snapshots and pong the sockets add.

Each event is `{"type", "jobId", "version", "at", ...}`: `version` is the job's counter, bumped by the script
that changed the state and published the event, so listeners apply events in version order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

from orchestrator.models import JobStatus
from orchestrator.wire.responses import Count, InstanceId, Job, JobId, JobSummary, Time, Version


class Event(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    """What every event carries."""

    job_id: JobId
    version: Version
    at: Time


class JobCreated(Event, tag="job.created"):
    """The first update (or, for a secure sum, the first key) created the job."""

    total_clients: Count
    status: Literal["IN_PROGRESS"]
    instance_id: InstanceId


class ClientDone(Event, tag="client.done"):
    """A client reported (its first update; a repeated one announces nothing)."""

    client_id: JobId
    done_count: Count
    total_clients: Count


ClosedBy = Literal["all", "deadline", "timeout", "admin"]


class JobAggregating(Event, tag="job.aggregating"):
    """Every client has reported (or the deadline came with enough of them): aggregation is queued."""

    done_count: Count
    total_clients: Count
    status: Literal["AGGREGATING"]
    contributors: Annotated[Count, Meta(description="The clients whose data the result will hold.")] | UnsetType = UNSET
    closed_by: Annotated[ClosedBy, Meta(description="What closed collection.")] | UnsetType = UNSET


class QuorumReached(Event, tag="job.quorum_reached"):
    """minClients reports (a secure sum: inputs) are in: the job will complete at its deadline whatever else."""

    done_count: Count
    min_clients: Count
    total_clients: Count
    expected: Annotated[Count, Meta(description="How many reports the job still waits for before its deadline.")]


class RoundClosed(Event, tag="round.closed"):
    """A round of a secure sum closed with at least minClients answers; the next one is open."""

    round: Literal["keys", "shares", "inputs", "unmask"]
    closed_by: ClosedBy
    participants: Annotated[Count, Meta(description="Who answered it.")]
    expected: Annotated[Count, Meta(description="Whom it waited for.")]
    next: Literal["shares", "inputs", "unmask", "done"]
    round_deadline_at: Annotated[int, Meta(ge=0, description="When the next round closes (epoch ms; 0: done).")]
    dropped: Annotated[list[str], Meta(description="Who did not answer it.")] | UnsetType = UNSET


class ClientDropped(Event, tag="client.dropped"):
    """A client missed a round of a secure sum: it takes no further part (its data is not in the result)."""

    client_id: JobId
    round: Literal["keys", "shares", "inputs"]


class SharesPosted(Event, tag="shares.posted"):
    """A client posted its sealed share bundles (the shares round)."""

    client_id: JobId
    count: Count
    expected: Count


class UnmaskPosted(Event, tag="unmask.posted"):
    """A survivor answered the unmask round."""

    client_id: JobId
    count: Count
    expected: Count


class KeysRegistered(Event, tag="keys.registered"):
    """A client of a secure-sum job registered (or replaced) its public key."""

    client_id: JobId
    key_count: Count
    total_clients: Count
    replaced: bool


class KeysComplete(Event, tag="keys.complete"):
    """Every client of a secure-sum job has a key: clients may mask and send their vectors."""

    key_count: Count
    total_clients: Count


class JobCompleted(Event, tag="job.completed"):
    status: Literal["COMPLETED"]
    final_result: Annotated[Any, Meta(description="The stored result, as stored.")] = UNSET


class JobFailed(Event, tag="job.failed"):
    """Aggregation failed, or the deadline came with fewer than minClients reports (then with the counts)."""

    status: Literal["FAILED"]
    reason: str
    done_count: Count | UnsetType = UNSET
    total_clients: Count | UnsetType = UNSET
    min_clients: Count | UnsetType = UNSET
    round: Annotated[str, Meta(description="A secure sum's round that had too few answers.")] | UnsetType = UNSET
    closed_by: ClosedBy | UnsetType = UNSET


class JobCancelled(Event, tag="job.cancelled"):
    status: Literal["CANCELLED"]
    previous_status: Literal["IN_PROGRESS", "AGGREGATING"]
    reason: str


class JobExpired(Event, tag="job.expired"):
    """The job outlived its TTL and is gone; a job of the same id may be created again (its versions go on)."""

    status: JobStatus


class DeliverySucceeded(Event, tag="delivery.succeeded"):
    destination: Annotated[str, Meta(description="api or file")]
    state: Literal["delivered"]
    attempts: Annotated[int, Meta(ge=1)]
    delivered_at: Time
    http_status: Annotated[int, Meta(description="api: the results API's answer.")] | UnsetType = UNSET
    files: Annotated[list[str], Meta(description="file: the files written.")] | UnsetType = UNSET


class DeliveryFailed(Event, tag="delivery.failed"):
    """A delivery failed for good (dead-lettered): POST /api/jobs/{jobId}/deliveries/retry queues it again."""

    destination: str
    state: Literal["failed"]
    attempts: Annotated[int, Meta(ge=1)]
    reason: str
    dead_lettered: Literal[True]


JobEvent = (
    JobCreated
    | ClientDone
    | JobAggregating
    | KeysRegistered
    | KeysComplete
    | QuorumReached
    | RoundClosed
    | ClientDropped
    | SharesPosted
    | UnmaskPosted
    | JobCompleted
    | JobFailed
    | JobCancelled
    | JobExpired
    | DeliverySucceeded
    | DeliveryFailed
)
EVENTS: tuple[type[Event], ...] = get_args(JobEvent)


class JobSnapshot(msgspec.Struct, tag_field="type", tag="snapshot", rename="camel", kw_only=True):
    """`/ws/jobs/{jobId}`'s first message (and its answer to a gap it cannot fill from the job's history)."""

    job_id: JobId
    version: Version
    at: Time
    job: Annotated[Job | None, Meta(description="null: no such job (yet, or any more).")]


class RecentSnapshot(msgspec.Struct, tag_field="type", tag="snapshot", rename="camel", kw_only=True):
    """`/ws`'s first message: the most recent jobs (WS_SNAPSHOT_JOBS), newest first."""

    at: Time
    jobs: list[JobSummary]


class JobSummarySnapshot(Event, tag="job.snapshot"):
    """`/ws`: a job the socket knew nothing of (older than its snapshot), or one whose missed events are gone."""

    job: JobSummary | None


class Pong(msgspec.Struct, tag_field="type", tag="pong"):
    """The answer to the text `ping`."""


JobSocketMessage = Annotated[
    JobSnapshot | Pong | JobEvent,
    Meta(description="A message of /ws/jobs/{jobId}: a snapshot, then the job's events in version order."),
]
AllSocketMessage = Annotated[
    RecentSnapshot | JobSummarySnapshot | Pong | JobEvent,
    Meta(description="A message of /ws: a snapshot of the recent jobs, then every job's events."),
]
