"""HTTP handlers: parse, validate, call the store, shape the response."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator import SERVICE_NAME, __version__
from orchestrator.errors import Conflict, JobNotFound, UnsupportedMediaType
from orchestrator.models import Job, JobStatus, UpdateOutcome, iso_ms
from orchestrator.openapi import OPENAPI
from orchestrator.store import StoreUnavailable
from orchestrator.typedefs import METRICS, STORE
from orchestrator.validation import (
    ID_PATTERN,
    parse_cursor,
    parse_json_object,
    parse_limit,
    parse_status,
    parse_update,
    validate_id,
)

logger = logging.getLogger("orchestrator.api")

_JSON_TYPES = {"application/json"}


async def index(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "service": SERVICE_NAME,
            "version": __version__,
            "links": {
                "update": "/api/update",
                "jobStatus": "/api/job-status/{jobId}",
                "jobs": "/api/jobs",
                "job": "/api/jobs/{jobId}",
                "openapi": "/api/openapi.json",
                "health": "/healthz",
                "ready": "/readyz",
                "metrics": "/metrics",
            },
        }
    )


async def update(request: web.Request) -> web.Response:
    content_type = request.content_type
    if content_type not in _JSON_TYPES and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type or 'none'}")
    req = parse_update(parse_json_object(await request.read()))
    result = await request.app[STORE].record_update(req)
    request.app[METRICS].updates.labels(result.outcome.value).inc()
    where = f"job {req.job_id}, client {req.client_id}"
    if result.outcome is UpdateOutcome.CONFLICT:
        field = result.conflict_field or "totalClients"
        logger.warning("Refused update for %s: %s differs from the job's", where, field)
        raise Conflict(
            f"Job {req.job_id} already exists with a different {field}",
            code="total_clients_mismatch" if field == "totalClients" else "schema_mismatch",
            jobId=req.job_id,
            field=field,
            totalClients=result.total_clients,
        )
    if result.outcome is UpdateOutcome.CLOSED:
        logger.warning("Refused new client for %s: job is %s", where, result.status.value)
        raise Conflict(
            f"Job {req.job_id} is {result.status.value} and no longer accepts new clients",
            code="job_not_collecting",
            jobId=req.job_id,
            status=result.status.value,
        )
    duplicate = result.outcome is UpdateOutcome.DUPLICATE
    if result.created:
        logger.info("Job %s created (totalClients=%d)", req.job_id, result.total_clients)
    if duplicate:
        message = f"Update for {where} was already recorded."
    else:
        message = f"Update for {where} recorded."
        logger.info(
            "Client %s done for job %s (doneCount=%d/%d)",
            req.client_id,
            req.job_id,
            result.done_count,
            result.total_clients,
        )
    if result.triggered:
        request.app[METRICS].triggers.inc()
        logger.info(
            "Job %s: all %d clients done; moved to AGGREGATING and queued for aggregation",
            req.job_id,
            result.total_clients,
        )
    return web.json_response(
        {
            "message": message,
            "jobId": req.job_id,
            "clientId": req.client_id,
            "alreadyRecorded": duplicate,
            "status": result.status.value,
            "doneCount": result.done_count,
            "totalClients": result.total_clients,
            "version": result.version,
        }
    )


async def job_status(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    try:
        if not ID_PATTERN.fullmatch(job_id):
            raise JobNotFound(job_id)
        job = await request.app[STORE].get_job(job_id)
    except JobNotFound:
        # The original's shape, which polling clients check for.
        return web.json_response({"error": f"Unknown jobId {job_id}", "code": "job_not_found"}, status=404)
    return web.json_response(status_body(job))


def status_body(job: Job) -> dict[str, Any]:
    """The original's job-status shape, plus a few additive fields."""
    progress = {"doneCount": job.done_count, "totalClients": job.total_clients, "percentage": job.percentage}
    body: dict[str, Any] = {
        "status": job.status.value,
        "jobId": job.job_id,
        "message": _status_message(job),
        "progress": progress,
        "version": job.version,
        "jobInfo": {
            "totalClients": job.total_clients,
            "doneCount": job.done_count,
            "schema": job.schema,
            "finalResult": job.final_result,
            "updatedClients": [c.client_id for c in job.clients],
        },
    }
    if job.failure_reason:
        body["failureReason"] = job.failure_reason
    if job.status is JobStatus.COMPLETED:
        result = job.final_result if isinstance(job.final_result, dict) else {}
        body["aggregatedResults"] = result.get("aggregatedResults", job.final_result)
        body["metadata"] = result.get("metadata") or {
            "totalFeatures": len(job.schema or []),
            "totalClients": job.total_clients,
            "completedAt": iso_ms(job.completed_at_ms or job.updated_at_ms),
            "doneCount": job.done_count,
        }
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


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    status = parse_status(query.get("status"))
    limit = parse_limit(query.get("limit"))
    cursor = parse_cursor(query.get("cursor"))
    jobs, next_cursor = await request.app[STORE].list_jobs(status=status, limit=limit, cursor=cursor)
    return web.json_response(
        {
            "jobs": [job_summary(job) for job in jobs],
            "nextCursor": f"{next_cursor[0]}:{next_cursor[1]}" if next_cursor else None,
        }
    )


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


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    job = await request.app[STORE].get_job(job_id)
    return web.json_response(
        {
            **job_summary(job),
            "schema": job.schema,
            "clients": [{"clientId": c.client_id, "reportedAt": iso_ms(c.reported_at_ms)} for c in job.clients],
            "aggregatingAt": iso_ms(job.aggregating_at_ms),
            "completedAt": iso_ms(job.completed_at_ms),
            "failureReason": job.failure_reason,
            "finalResult": job.final_result,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreUnavailable as e:
        return web.json_response({"status": "unavailable", "redis": str(e)}, status=503, headers={"Retry-After": "1"})
    return web.json_response({"status": "ready", "redis": "ok"})


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    try:
        counts = await request.app[STORE].count_by_status()
    except StoreUnavailable:
        counts = {}
    for status, count in counts.items():
        registry.jobs.labels(status.value).set(count)
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)
