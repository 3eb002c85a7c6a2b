"""HTTP handlers of the key round: clients register their public keys, then read everyone's."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from aiohttp import web

from orchestrator.bodies import parse_key_body, read_body, require_json
from orchestrator.errors import CONFLICT_CODES, Conflict, JobNotFound, ValidationError
from orchestrator.models import iso_ms
from orchestrator.quotas import job_quota_exceeded, with_creation_quotas
from orchestrator.securesum.store import RoundAnswer, Rounds
from orchestrator.securesum.vectors import key_layout
from orchestrator.security.actors import request_actor
from orchestrator.security.policy import AUDIT_OUTCOME, authorise_write, require_self
from orchestrator.store import now_ms
from orchestrator.typedefs import MEMORY, OFFLOAD, ROUNDS, SETTINGS, VECTORS
from orchestrator.validation import parse_json_object, validate_id
from orchestrator.wire.requests import UnmaskBody, decode_shares, decode_unmask

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
            "keys_complete": f"The keys round of job {job_id} is closed (every client registered, or its deadline "
            f"passed): {req.client_id} is not one of its participants",
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
        raise _not_secure_sum(job_id)
    total = int(fields["totalClients"])
    round_ = fields["round"] or "keys"
    complete = round_ != "keys"
    entries = []
    for client in sorted(public_keys):
        mask_key, _, encryption_key = public_keys[client].partition(" ")
        entries.append({"clientId": client, "publicKey": mask_key, "encryptionKey": encryption_key})
    return web.json_response(
        {
            "jobId": job_id,
            "status": fields["status"],
            "totalClients": total,
            "minClients": int(fields["minClients"] or total),
            "threshold": int(fields["minClients"] or total),
            "maxRows": int(fields["maxRows"] or 0),
            "instanceId": fields["instance"],
            "round": round_,
            "roundDeadline": iso_ms(int(fields["roundDeadlineAt"] or 0) or None),
            "keyCount": len(public_keys),
            "complete": complete,
            "participants": sorted(public_keys) if complete else [],
            "keys": entries,
            "version": int(fields["version"] or 0),
        }
    )


async def post_shares(request: web.Request) -> web.Response:
    """The shares round: a client's bundles, one sealed for each member of U1 (the service reads none)."""
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    require_json(request)
    settings = request.app[SETTINGS]
    body = decode_shares(parse_json_object(await read_body(request, settings.max_vector_body_bytes)))
    authorise_write(request, body.client_id, job_id)
    bundles = [(b.to, b.ciphertext) for b in body.shares]
    for to, text in bundles:
        if _decoded_length(text) < 0:
            raise ValidationError(f"The bundle for {to} is not base64", code="invalid_shares", field="shares")
    answer = await request.app[ROUNDS].post_shares(job_id, body.client_id, bundles)
    request[AUDIT_OUTCOME] = answer.outcome
    if answer.outcome == "refused" and answer.detail == "shares_incomplete":
        rounds = await request.app[ROUNDS].rounds(job_id)
        expected = rounds.participants if rounds else []
        raise ValidationError(
            f"'shares' must hold one bundle for every member of job {job_id}'s keys round ({len(expected)}), "
            "the sender included, and no one else",
            code="shares_incomplete",
            field="shares",
            expected=expected,
        )
    _refuse(answer, job_id, body.client_id, "shares")
    logger.info(
        "Shares of client %s %s for job %s (%d/%d)",
        body.client_id,
        answer.outcome,
        job_id,
        answer.count,
        answer.expected,
    )
    return _answered(answer, job_id, body.client_id)


async def get_shares(request: web.Request) -> web.Response:
    """The bundles sealed for one client by the members of U2, once the shares round has closed."""
    job_id, client_id = request.match_info["jobId"], request.match_info["clientId"]
    validate_id(job_id, "jobId")
    validate_id(client_id, "clientId")
    require_self(request, client_id)
    rounds = await _rounds(request, job_id)
    if rounds.round in ("keys", "shares"):
        raise Conflict(
            f"Job {job_id}'s shares round has not closed yet (round: {rounds.round})",
            code="round_not_open",
            jobId=job_id,
        )
    if client_id not in rounds.sharers:
        raise Conflict(
            f"Client {client_id} did not complete job {job_id}'s shares round: it takes no further part",
            code="client_dropped",
            jobId=job_id,
            clientId=client_id,
        )
    bundles = await request.app[ROUNDS].inbox(job_id, client_id, rounds.sharers)
    return web.json_response(
        {
            "jobId": job_id,
            "clientId": client_id,
            "instanceId": rounds.instance_id,
            "round": rounds.round,
            "threshold": rounds.min_clients,
            "participants": rounds.participants,
            "sharers": rounds.sharers,
            "shares": [{"from": sender, "ciphertext": text} for sender, text in bundles],
        }
    )


async def get_unmask(request: web.Request) -> web.Response:
    """What the unmask round asks every survivor: its shares of each survivor's self-mask seed and of each
    dropped client's mask key (no client is in both lists)."""
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    rounds = await _rounds(request, job_id)
    if rounds.round in ("keys", "shares", "inputs"):
        raise Conflict(
            f"Job {job_id}'s inputs round has not closed yet (round: {rounds.round})",
            code="round_not_open",
            jobId=job_id,
        )
    return web.json_response(
        {
            "jobId": job_id,
            "instanceId": rounds.instance_id,
            "round": rounds.round,
            "status": rounds.status,
            "threshold": rounds.min_clients,
            "survivors": rounds.survivors,
            "dropped": rounds.dropped_after_sharing,
            "answered": rounds.answered,
        }
    )


async def post_unmask(request: web.Request) -> web.Response:
    """A survivor's shares for the unmask round, checked against what the round asks (exactly its lists, the
    poster's own share index, the values' lengths) before they are kept."""
    job_id = request.match_info["jobId"]
    validate_id(job_id, "jobId")
    require_json(request)
    settings = request.app[SETTINGS]
    body = decode_unmask(parse_json_object(await read_body(request, settings.max_vector_body_bytes)))
    authorise_write(request, body.client_id, job_id)
    rounds = await _rounds(request, job_id)
    if rounds.round != "unmask" and rounds.status == "IN_PROGRESS":
        raise Conflict(
            f"Job {job_id} is not in its unmask round (round: {rounds.round})", code="round_not_open", jobId=job_id
        )
    answer_json = unmask_answer(body, rounds)
    answer = await request.app[ROUNDS].post_unmask(job_id, body.client_id, answer_json)
    request[AUDIT_OUTCOME] = answer.outcome
    _refuse(answer, job_id, body.client_id, "unmask")
    logger.info(
        "Unmask shares of client %s %s for job %s (%d/%d)",
        body.client_id,
        answer.outcome,
        job_id,
        answer.count,
        answer.expected,
    )
    return _answered(answer, job_id, body.client_id)


def unmask_answer(body: UnmaskBody, rounds: Rounds) -> str:
    """The answer as kept (canonical JSON), or the ValidationError saying how it differs from what the round asks."""
    if body.client_id not in rounds.survivors:
        raise Conflict(
            f"Client {body.client_id} sent no counted input to this secure sum: it takes no part in unmasking",
            code="client_dropped",
            clientId=body.client_id,
        )
    index = rounds.index_of(body.client_id)
    kept: dict[str, dict[str, list[Any]]] = {}
    asked = (
        ("selfMaskShares", body.self_mask_shares, rounds.survivors, 16),
        ("keyShares", body.key_shares, rounds.dropped_after_sharing, 32),
    )
    for name, shares, wanted, size in asked:
        named = {s.of for s in shares}
        if named != set(wanted):
            raise ValidationError(
                f"'{name}' must hold a share of exactly these clients: {', '.join(wanted) or 'none'}",
                code="invalid_shares",
                field=name,
                expected=wanted,
            )
        for share in shares:
            if share.index != index or _decoded_length(share.value) != size:
                raise ValidationError(
                    f"'{name}': the share of {share.of} must have index {index} (this client's place in the keys "
                    f"round) and a value of {size} bytes",
                    code="invalid_shares",
                    field=name,
                )
        kept["self" if size == 16 else "key"] = {s.of: [s.index, s.value] for s in shares}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


async def _rounds(request: web.Request, job_id: str) -> Rounds:
    rounds = await request.app[ROUNDS].rounds(job_id)
    if rounds is None:
        if await request.app[VECTORS].key_round(job_id) is None:
            raise JobNotFound(job_id)
        raise _not_secure_sum(job_id)
    return rounds


def _refuse(answer: RoundAnswer, job_id: str, client_id: str, what: str) -> None:
    details: dict[str, Any] = {"jobId": job_id, "clientId": client_id}
    if answer.outcome == "missing":
        raise JobNotFound(job_id)
    if answer.outcome == "closed":
        raise Conflict(
            f"Job {job_id} is {answer.status} and no longer takes {what}", code="job_not_collecting", **details
        )
    if answer.outcome != "refused":
        return
    messages = {
        "not_secure_sum": f"Job {job_id} is not a secure-sum job",
        "not_a_participant": f"Client {client_id} registered no keys for job {job_id}",
        "shares_conflict": f"Client {client_id} already posted other shares for job {job_id}: its peers may hold them",
        "unmask_conflict": f"Client {client_id} already answered job {job_id}'s unmask round differently",
        "round_not_open": f"Job {job_id} is not in its {what} round yet",
        "client_dropped": f"Client {client_id} was dropped from job {job_id}'s secure sum (it missed a round, or the "
        f"{what} round has closed)",
    }
    logger.warning("Refused %s of client %s for job %s: %s", what, client_id, job_id, answer.detail)
    raise Conflict(messages.get(answer.detail, f"Refused: {answer.detail}"), code=answer.detail, **details)


def _answered(answer: RoundAnswer, job_id: str, client_id: str) -> web.Response:
    return web.json_response(
        {
            "jobId": job_id,
            "clientId": client_id,
            "alreadyPosted": answer.outcome == "duplicate",
            "count": answer.count,
            "expected": answer.expected,
            "status": answer.status,
            "version": answer.version,
        },
        status=201 if answer.outcome == "posted" else 200,
    )


def _not_secure_sum(job_id: str) -> Conflict:
    return Conflict(f"Job {job_id} is not a secure-sum job: it has no key round", code="not_secure_sum", jobId=job_id)


def _decoded_length(text: str) -> int:
    """The length of what base64 ``text`` decodes to; -1 when it is not base64."""
    try:
        return len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return -1
