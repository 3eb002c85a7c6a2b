"""HTTP handlers: parse, validate, call the store, shape the response."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator import SERVICE_NAME, __version__
from orchestrator.bodies import parse_update_body, read_body
from orchestrator.errors import CONFLICT_CODES, ApiError, Conflict, DomainError, JobNotFound, ValidationError
from orchestrator.logconfig import info_fast
from orchestrator.models import Actor, UpdateOutcome, UpdateRequest, UpdateResult
from orchestrator.openapi import OPENAPI
from orchestrator.quotas import job_quota_exceeded, with_creation_quotas
from orchestrator.securesum.vectors import refusal, update_layout
from orchestrator.security.actors import request_actor
from orchestrator.security.guard import rate_limited
from orchestrator.security.policy import (
    AUDIT_JOB,
    AUDIT_LOGGED,
    AUDIT_OUTCOME,
    AUDITED,
    authorise_write,
    principal,
    require_unscoped,
)
from orchestrator.serializers import dumps, job_detail, job_summary, status_body
from orchestrator.settings import Settings
from orchestrator.staticfiles import static_dir
from orchestrator.store import StoreUnavailable
from orchestrator.typedefs import AUTHENTICATOR, MEMORY, METRICS, OFFLOAD, SETTINGS, STORE
from orchestrator.validation import ID_PATTERN, parse_cursor, parse_json_object, parse_limit, parse_status, validate_id
from orchestrator.wire.requests import decode_callback, decode_cancel

logger = logging.getLogger("orchestrator.api")


async def index(request: web.Request) -> web.StreamResponse:
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/dashboard")
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
                "dashboard": "/dashboard",
                "events": "/ws",
                "jobEvents": "/ws/jobs/{jobId}",
            },
        }
    )


async def update(request: web.Request) -> web.Response:
    """Decode (one typed model) -> authorise -> the backend's vector step -> one script -> the answer."""
    settings, offload = request.app[SETTINGS], request.app[OFFLOAD]
    # The security middleware has refused other media types (policy.BODY_TYPES).
    binary = request.content_type == "application/octet-stream"
    body = await read_body(request, settings.max_vector_body_bytes)
    # A large body (a long vector, a schema of many categories) is read in a worker process.
    req = await offload.run(len(body), parse_update_body, body, binary, dict(request.query), settings)
    if req.aggregation == "smpc" and not settings.smpc_coordinator_url:
        raise ValidationError(
            "This service has no SMPC coordinator configured (SMPC_COORDINATOR_URL)",
            code="backend_unavailable",
            field="aggregation",
        )
    request[AUDIT_JOB] = req.job_id
    authorise_write(request, req.client_id, req.job_id)
    req, layout_error = await update_layout(offload, req, settings)
    req, creation_error = with_creation_quotas(req, layout_error, settings, request.app[MEMORY])
    actor = request_actor(request)
    result = await request.app[STORE].record_update(req, actor)
    if result.created:
        request.app[MEMORY].charge(req)
    request[AUDITED] = True
    request[AUDIT_OUTCOME] = result.outcome.value
    request.app[METRICS].count_update(result.outcome.value)
    if result.outcome not in (UpdateOutcome.RECORDED, UpdateOutcome.DUPLICATE):
        raise _refused(result, req, creation_error, actor, settings)
    duplicate = result.outcome is UpdateOutcome.DUPLICATE
    where = f"job {req.job_id}, client {req.client_id}"
    if not duplicate:
        # One line for both when the update created the job: logging is a good part of an update's cost.
        created = f"Job {req.job_id} created (totalClients={result.total_clients}); " if result.created else ""
        # The same line is this update's audit line (who, role, IP): one log line per update.
        info_fast(
            logger,
            f"{created}Client {req.client_id} done for job {req.job_id} "
            f"(doneCount={result.done_count}/{result.total_clients}) "
            f"[who={actor.who}{' role=' + actor.role if actor.role else ''} ip={actor.ip}]",
        )
        request[AUDIT_LOGGED] = True
    if result.triggered:
        request.app[METRICS].triggers.inc()
        logger.info(
            "Job %s: all %d clients done; moved to AGGREGATING and queued for aggregation",
            req.job_id,
            result.total_clients,
        )
    return web.json_response(
        {
            "message": f"Update for {where} was already recorded." if duplicate else f"Update for {where} recorded.",
            "jobId": req.job_id,
            "clientId": req.client_id,
            "alreadyRecorded": duplicate,
            "status": result.status.value,
            "doneCount": result.done_count,
            "totalClients": result.total_clients,
            "version": result.version,
        }
    )


def _refused(
    result: UpdateResult, req: UpdateRequest, creation_error: DomainError | None, actor: Actor, settings: Settings
) -> DomainError:
    """The error for an update the UPDATE script did not record."""
    where = f"job {req.job_id}, client {req.client_id}"
    if result.outcome is UpdateOutcome.RATE_LIMITED:
        return rate_limited(int(result.conflict_field or "1000") / 1000)
    if result.outcome is UpdateOutcome.QUOTA_EXCEEDED:
        logger.warning("Refused new job for %s: job quota of %s exceeded", where, actor.client or req.client_id)
        return job_quota_exceeded(int(result.conflict_field or "1000") / 1000, settings)
    if result.outcome is UpdateOutcome.CONFLICT:
        field = result.conflict_field or "totalClients"
        logger.warning("Refused update for %s: %s differs from the job's", where, field)
        return Conflict(
            f"Job {req.job_id} already exists with a different {field}",
            code=CONFLICT_CODES[field],
            jobId=req.job_id,
            field=field,
            totalClients=result.total_clients,
        )
    if result.outcome is UpdateOutcome.REFUSED:
        reason = result.conflict_field or ""
        error = creation_error if creation_error and reason == creation_error.code else refusal(reason, req)
        logger.warning("Refused update for %s: %s", where, error.code)
        return error
    logger.warning("Refused new client for %s: job is %s", where, result.status.value)
    return Conflict(
        f"Job {req.job_id} is {result.status.value} and no longer accepts new clients",
        code="job_not_collecting",
        jobId=req.job_id,
        status=result.status.value,
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
    return web.json_response(status_body(job), dumps=dumps)


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    status = parse_status(query.get("status"))
    limit = parse_limit(query.get("limit"))
    cursor = parse_cursor(query.get("cursor"))
    jobs, next_cursor = await request.app[STORE].list_jobs(status=status, limit=limit, cursor=cursor)
    who = principal(request)
    if who.jobs is not None:  # a token limited to some jobs lists those only (a page may come out short)
        jobs = [job for job in jobs if who.may_touch(job.job_id)]
    return web.json_response(
        {
            "jobs": [job_summary(job) for job in jobs],
            "nextCursor": f"{next_cursor[0]}:{next_cursor[1]}" if next_cursor else None,
        }
    )


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    job = await request.app[STORE].get_job(job_id)
    return web.json_response(job_detail(job), dumps=dumps)


async def cancel_job(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    reason = "cancelled by request"
    if request.can_read_body:
        body = decode_cancel(parse_json_object(await read_body(request, request.app[SETTINGS].max_body_bytes)))
        reason = body.reason or reason
    outcome, status, version = await request.app[STORE].cancel_job(job_id, reason)
    if outcome == "missing":
        raise JobNotFound(job_id)
    if outcome == "finished":
        assert status is not None
        raise Conflict(
            f"Job {job_id} is already {status.value} and cannot be cancelled",
            code="job_finished",
            jobId=job_id,
            status=status.value,
        )
    if outcome == "cancelled":
        logger.info("Job %s cancelled: %r", job_id, reason)
    return web.json_response(
        {"jobId": job_id, "status": "CANCELLED", "alreadyCancelled": outcome == "already", "version": version}
    )


async def close_job(request: web.Request) -> web.Response:
    """Close collection now, by the deadline's rule: with at least minClients reported the job aggregates
    them, with fewer it fails; a secure sum closes its round in progress (the next one opens)."""
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    if request.can_read_body:
        decode_cancel(parse_json_object(await read_body(request, request.app[SETTINGS].max_body_bytes)))
    closed, outcome, status, version = await request.app[STORE].close_collection(job_id, by="admin")
    if not status:
        raise JobNotFound(job_id)
    if not closed:
        raise Conflict(
            f"Job {job_id} is {status} and no longer collecting: there is nothing to close",
            code="job_not_collecting",
            jobId=job_id,
            status=status,
        )
    logger.info("Job %s: collection closed by an admin (%s)", job_id, outcome)
    return web.json_response({"jobId": job_id, "status": status, "outcome": outcome, "version": version})


async def retry_deliveries(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    queued = await request.app[STORE].retry_deliveries(job_id)
    if queued is None:
        if await request.app[STORE].find_job(job_id) is None:
            raise JobNotFound(job_id)
        raise Conflict(f"Job {job_id} is not COMPLETED: it has no result to deliver", code="job_not_completed")
    if queued:
        logger.info("Deliveries of job %s queued again: %s", job_id, ", ".join(queued))
    return web.json_response({"jobId": job_id, "retried": queued})


async def smpc_callback(request: web.Request) -> web.Response:
    """The coordinator pushing a job's result (the returnUrl given when the job was triggered)."""
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    token = request.query.get("token", "")
    body = parse_json_object(await read_body(request, request.app[SETTINGS].max_body_bytes))
    decode_callback(body)
    stored = await request.app[STORE].store_callback(job_id, token, body)
    if stored < 0:
        raise ApiError("Not a valid callback token for this job", code="invalid_token", http_status=403)
    if stored == 0:
        raise (
            JobNotFound(job_id)
            if not await request.app[STORE].find_job(job_id)
            else Conflict(f"Job {job_id} is not aggregating", code="job_not_aggregating", jobId=job_id)
        )
    logger.info("Coordinator pushed the result of job %s", job_id)
    return web.json_response({"jobId": job_id, "received": True})


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreUnavailable as e:
        # A public route: with authentication on, the reason (hosts, ports) stays in the log.
        reason = "unavailable" if request.app[AUTHENTICATOR].enabled else str(e)
        if request.app[AUTHENTICATOR].enabled:
            logger.warning("Not ready: %s", e)
        return web.json_response({"status": "unavailable", "redis": reason}, status=503, headers={"Retry-After": "1"})
    return web.json_response({"status": "ready", "redis": "ok"})


async def metrics(request: web.Request) -> web.Response:
    require_unscoped(principal(request), "the service's metrics")
    registry = request.app[METRICS]
    try:
        counts = await request.app[STORE].count_by_status()
    except StoreUnavailable:
        counts = {}
    for status, count in counts.items():
        registry.jobs.labels(status.value).set(count)
    memory = request.app[MEMORY]
    for kind, value in (("used", memory.used), ("limit", memory.limit), ("threshold", memory.threshold)):
        registry.redis_memory.labels(kind).set(value)
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)
