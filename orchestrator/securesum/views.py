"""HTTP handlers of the key round: clients register their public keys, then read everyone's."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from orchestrator.bodies import parse_key_body, read_body, require_json
from orchestrator.errors import CONFLICT_CODES, Conflict, JobNotFound, ValidationError
from orchestrator.quotas import job_quota_exceeded, with_creation_quotas
from orchestrator.securesum.vectors import key_layout
from orchestrator.security.actors import request_actor
from orchestrator.security.policy import AUDIT_OUTCOME, authorise_write
from orchestrator.store import now_ms
from orchestrator.typedefs import MEMORY, OFFLOAD, SETTINGS, VECTORS
from orchestrator.validation import validate_id

logger = logging.getLogger("orchestrator.api")


async def register_key(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    require_json(request)
    settings = request.app[SETTINGS]
    # The schema of a long vector is long too: this body may be as large as a vector's.
    body = await read_body(request, settings.max_vector_body_bytes)
    # A large schema is parsed and laid out in a worker process, off the event loop.
    offload = request.app[OFFLOAD]
    req = await offload.run(len(body), parse_key_body, job_id, body, now_ms())
    authorise_write(request, req.client_id, job_id)
    req, layout_error = await key_layout(offload, req, settings)
    req, creation_error = with_creation_quotas(req, layout_error, settings, request.app[MEMORY])
    result = await request.app[VECTORS].register_key(req, request_actor(request))
    if result.created:
        request.app[MEMORY].charge(req)
    request[AUDIT_OUTCOME] = result.outcome
    if result.outcome == "quota_exceeded":
        logger.warning("Refused new job %s of client %s: job quota exceeded", job_id, req.client_id)
        raise job_quota_exceeded(int(result.detail or "1000") / 1000, settings)
    if result.outcome == "refused" and creation_error is not None and result.detail == creation_error.code:
        raise creation_error
    where = f"job {job_id}, client {req.client_id}"
    details: dict[str, Any] = {"jobId": job_id, "clientId": req.client_id}
    if result.outcome == "conflict":
        logger.warning("Refused key for %s: %s differs from the job's", where, result.detail)
        raise Conflict(
            f"Job {job_id} already exists with a different {result.detail}",
            code=CONFLICT_CODES[result.detail or ""],
            field=result.detail,
            **details,
        )
    if result.outcome == "closed":
        raise Conflict(
            f"Job {job_id} is {result.status} and no longer takes keys", code="job_not_collecting", **details
        )
    if result.outcome == "refused":
        logger.warning("Refused key for %s: %s", where, result.detail)
        if result.detail == "schema_required":
            message = f"Job {job_id} does not exist yet: the first key needs the job's schema"
            raise ValidationError(message, code=result.detail, **details)
        conflicts = {
            "not_secure_sum": f"Job {job_id} is not a secure-sum job: it has no key round",
            "key_conflict": f"Client {req.client_id} registered another public key for job {job_id}, and the key "
            "round is complete: other clients may have masked with it",
            "keys_complete": f"Every one of job {job_id}'s {result.total_clients} clients has registered a key; "
            f"{req.client_id} is not one of them",
        }
        raise Conflict(conflicts[result.detail or ""], code=result.detail, **details)
    complete = result.key_count >= result.total_clients
    if result.outcome in ("registered", "replaced"):
        created = f"Job {job_id} created for a secure sum (totalClients={result.total_clients}); " * result.created
        logger.info(
            "%sPublic key of client %s %s for job %s (%d/%d)%s",
            created,
            req.client_id,
            result.outcome,
            job_id,
            result.key_count,
            result.total_clients,
            "; key round complete" if complete else "",
        )
    return web.json_response(
        {
            **details,
            "alreadyRegistered": result.outcome == "duplicate",
            "replaced": result.outcome == "replaced",
            "keyCount": result.key_count,
            "totalClients": result.total_clients,
            "complete": complete,
            "version": result.version,
            "instanceId": result.instance_id,
        },
        status=201 if result.outcome == "registered" else 200,
    )


async def get_keys(request: web.Request) -> web.Response:
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    found = await request.app[VECTORS].key_round(job_id)
    if found is None:
        raise JobNotFound(job_id)
    fields, public_keys = found
    if fields["aggregation"] != "secure-sum":
        raise Conflict(
            f"Job {job_id} is not a secure-sum job: it has no key round", code="not_secure_sum", jobId=job_id
        )
    total = int(fields["totalClients"])
    return web.json_response(
        {
            "jobId": job_id,
            "status": fields["status"],
            "totalClients": total,
            "maxRows": int(fields["maxRows"] or 0),
            "instanceId": fields["instance"],
            "keyCount": len(public_keys),
            "complete": len(public_keys) >= total,
            "keys": [{"clientId": c, "publicKey": public_keys[c]} for c in sorted(public_keys)],
            "version": int(fields["version"] or 0),
        }
    )
