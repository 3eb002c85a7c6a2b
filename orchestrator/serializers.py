"""Jobs as JSON: the shapes the HTTP API and the WebSocket snapshots share."""

from __future__ import annotations

import json
import secrets
from typing import Any

from orchestrator.models import Job, JobStatus, iso_ms


class RawJSON:
    """JSON text that goes into a response as it is: a stored schema (canonical JSON, checked when it was
    stored), which parsing and encoding again would cost a request as much as a second (a million
    categories) on the event loop."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(data: Any) -> str:
    """``json.dumps``, with each RawJSON spliced in as its text."""
    raws: list[str] = []
    token = secrets.token_hex(16)

    def placeholder(value: Any) -> str:
        if not isinstance(value, RawJSON):
            raise TypeError(f"{type(value).__name__} is not JSON serializable")
        raws.append(value.text)
        return f"@raw:{token}:{len(raws) - 1}@"

    text = json.dumps(data, default=placeholder)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@raw:{token}:{i}@"', raw, 1)
    return text


def raw_schema(job: Job) -> RawJSON | None:
    return RawJSON(job.schema_json) if job.schema_json else None


def status_body(job: Job) -> dict[str, Any]:
    """The original's job-status shape, plus a few additive fields."""
    progress = {"doneCount": job.done_count, "totalClients": job.total_clients, "percentage": job.percentage}
    body: dict[str, Any] = {
        "status": job.status.value,
        "jobId": job.job_id,
        "message": _status_message(job),
        "progress": progress,
        "version": job.version,
        "instanceId": job.instance_id,
        "minClients": job.min_clients,
        "jobInfo": {
            "totalClients": job.total_clients,
            "doneCount": job.done_count,
            "schema": raw_schema(job),
            "finalResult": job.final_result,
            "updatedClients": [c.client_id for c in job.clients],
        },
    }
    if job.failure_reason:
        body["failureReason"] = job.failure_reason
    if job.deliveries:
        body["deliveries"] = job.deliveries
    if job.aggregation == "secure-sum":
        body["keyRound"] = key_round(job)
    if job.status is JobStatus.COMPLETED:
        result = job.final_result if isinstance(job.final_result, dict) else {}
        body["aggregatedResults"] = result.get("aggregatedResults", job.final_result)
        body["metadata"] = result.get("metadata") or {
            "totalFeatures": len(job.schema or []),
            "totalClients": job.total_clients,
            "completedAt": iso_ms(job.completed_at_ms or job.updated_at_ms),
            "doneCount": job.done_count,
        }
        for name in ("contributors", "missingClients", "missingCount"):
            if name in result:
                body[name] = result[name]
    return body


def _status_message(job: Job) -> str:
    counts = f"(doneCount={job.done_count}/{job.total_clients})"
    match job.status:
        case JobStatus.IN_PROGRESS:
            return f"Job {job.job_id} is in progress {counts}."
        case JobStatus.AGGREGATING:
            return f"Job {job.job_id} is aggregating {counts}."
        case JobStatus.COMPLETED:
            return f"Job {job.job_id} is completed."
        case JobStatus.FAILED:
            return f"Job {job.job_id} failed: {job.failure_reason or 'no reason recorded'}."
        case JobStatus.CANCELLED:
            return f"Job {job.job_id} was cancelled {counts}."


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "status": job.status.value,
        "totalClients": job.total_clients,
        "doneCount": job.done_count,
        "percentage": job.percentage,
        "createdAt": iso_ms(job.created_at_ms),
        "updatedAt": iso_ms(job.updated_at_ms),
        "version": job.version,
    }


def job_detail(job: Job) -> dict[str, Any]:
    """The full job: summary, schema, clients with the time each reported, result."""
    return {
        **job_summary(job),
        "schema": raw_schema(job),
        "clients": [{"clientId": c.client_id, "reportedAt": iso_ms(c.reported_at_ms)} for c in job.clients],
        "aggregatingAt": iso_ms(job.aggregating_at_ms),
        "completedAt": iso_ms(job.completed_at_ms),
        "failureReason": job.failure_reason,
        "finalResult": job.final_result,
        "deliveries": job.deliveries,
        "aggregation": job.aggregation,
        "instanceId": job.instance_id,
        "minClients": job.min_clients,
        "deadline": iso_ms(job.deadline_at_ms),
        "participation": participation(job),
        **({"keyRound": key_round(job)} if job.aggregation == "secure-sum" else {}),
    }


def participation(job: Job) -> dict[str, Any]:
    """Who the job (its round in progress, for a secure sum) waits for and until when, and who dropped out:
    what a client app or the dashboard shows as "waiting for X, Y until T"."""
    reported = sorted(c.client_id for c in job.clients)
    expected: list[str] | None = None
    answered = reported
    if job.aggregation == "secure-sum" and job.round:
        rounds = {"shares": (job.participants, job.sharers), "inputs": (job.sharers, reported)}
        rounds["unmask"] = (reported, job.unmasked)
        expected, answered = rounds.get(job.round, (None, job.participants if job.round == "keys" else reported))
    open_ = job.status is JobStatus.IN_PROGRESS
    waiting = sorted(set(expected) - set(answered)) if expected is not None and open_ else []
    return {
        "minClients": job.min_clients,
        "round": (job.round or "collect") if open_ else "done",
        "roundDeadline": iso_ms(job.round_deadline_ms) if open_ else None,
        "deadline": iso_ms(job.deadline_at_ms),
        "expected": expected,
        "answered": answered,
        "waitingFor": waiting,
        "waitingCount": len(waiting) if expected is not None else max(job.total_clients - len(answered), 0) * open_,
        "dropped": [{"clientId": c, "round": r} for c, r in sorted(job.dropped.items())],
        "closedBy": job.closed_by,
    }


def key_round(job: Job) -> dict[str, Any]:
    complete = job.key_count >= job.total_clients or job.round not in (None, "keys")
    return {"keyCount": job.key_count, "totalClients": job.total_clients, "complete": complete}
