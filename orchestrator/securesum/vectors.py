"""The summed-vector backends' own step of a request that may create a job: the job's vector layout (built
from the validated schema, once per job), the refusal of a job whose sums could overflow, and the errors
of an update the UPDATE script refused for its vector."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TypeVar

from orchestrator.errors import Conflict, DomainError, ValidationError
from orchestrator.models import VECTOR_BACKENDS, KeyRequest, UpdateRequest
from orchestrator.offload import Offloader
from orchestrator.securesum.layout import LayoutError, OverflowRisk, VectorLayout
from orchestrator.settings import Settings
from orchestrator.wire.features import stored_features

R = TypeVar("R", UpdateRequest, KeyRequest)


@functools.lru_cache(maxsize=8)
def layout_of(schema_json: str) -> VectorLayout:
    """The layout of a canonical schema, built once per job (per process): every client of a job sends the
    same schema, and laying out a million categories takes as long as reading them."""
    return VectorLayout.from_features(stored_features(schema_json))


def vector_layout(schema_json: str, total_clients: int, max_rows: int) -> tuple[VectorLayout, ValidationError | None]:
    """The job's vector layout (400 if the schema has none), and the error that refuses creating a job
    of it: a sum that could overflow int64 (the job's size is a quota: quotas.with_creation_quotas). That
    error matters only to the request that would create the job (an existing job was checked when it was
    created)."""
    try:
        layout = layout_of(schema_json)
    except LayoutError as e:
        raise ValidationError(str(e), code="invalid_schema", field=e.field) from None
    try:
        layout.check_capacity(total_clients, max_rows)
    except OverflowRisk as e:
        return layout, ValidationError(str(e), code="overflow_risk", field="schema")
    return layout, None


async def update_layout(
    offload: Offloader, req: UpdateRequest, settings: Settings
) -> tuple[UpdateRequest, ValidationError | None]:
    """``req`` with what the summed-vector job it may create needs (its layout's length, its maxRows), and
    the error that refuses creating it, if any. An update of another backend, or without a schema (the job
    exists, or the script refuses it for want of one), needs none of it."""
    backend = req.aggregation or settings.aggregation_backend
    if backend not in VECTOR_BACKENDS:
        return replace(req, max_rows=None, max_rows_declared=False), None
    if req.schema_json is None:
        return replace(req, aggregation=backend, max_rows=None, max_rows_declared=False), None
    return await _laid_out(offload, replace(req, aggregation=backend), settings)


async def key_layout(
    offload: Offloader, req: KeyRequest, settings: Settings
) -> tuple[KeyRequest, ValidationError | None]:
    """``req`` with its job's maxRows and, if it brings the schema, its layout (see update_layout)."""
    if req.schema_json is None:
        return replace(req, max_rows=settings.vector_max_rows if req.max_rows is None else req.max_rows), None
    return await _laid_out(offload, req, settings)


async def _laid_out(offload: Offloader, req: R, settings: Settings) -> tuple[R, ValidationError | None]:
    assert req.schema_json is not None
    max_rows = settings.vector_max_rows if req.max_rows is None else req.max_rows
    # A schema of many categories is laid out in a worker process, which is sent the schema, not the request
    # (its vector may be megabytes).
    length, refusal = await offload.run(
        len(req.schema_json), layout_length, req.schema_json, req.total_clients, max_rows
    )
    laid_out = replace(req, vector_length=length, max_rows=max_rows, creation_refusal=refusal.code if refusal else "")
    return laid_out, refusal


def layout_length(schema_json: str, total_clients: int, max_rows: int) -> tuple[int, ValidationError | None]:
    """The length of the job's vector and the error that refuses creating the job (see vector_layout)."""
    layout, refusal = vector_layout(schema_json, total_clients, max_rows)
    return layout.length, refusal


def refusal(detail: str, req: UpdateRequest) -> DomainError:
    """The error for an update the UPDATE script refused (``detail``: its reason, maybe ':'-suffixed)."""
    reason, _, extra = detail.partition(":")
    job, client = req.job_id, req.client_id
    given = len(req.vector or b"") // 8
    conflicts = {
        "keys_incomplete": f"The key round of job {job} is not complete: register every client's public key "
        "(POST /api/jobs/{jobId}/keys) and wait for keys.complete before sending vectors",
        "not_a_participant": f"Client {client} registered no public key for job {job}",
        "round_not_open": f"Job {job} does not take masked inputs yet: its keys and shares rounds come first",
        "client_dropped": f"Client {client} was dropped from job {job}'s secure sum (it missed a round, or the "
        "inputs round has closed): its input would not be unmasked",
    }
    invalid = {
        "vector_required": f"Job {job} sums its clients' statistics: the update needs a 'vector'",
        "vector_not_expected": f"Job {job} does not sum vectors (its aggregation is not sum or secure-sum)",
        "vector_length_mismatch": f"The vector has {given} values; job {job}'s layout has {extra or 'more'}",
        "schema_required": f"Job {job} does not exist yet: the update that creates a summed-vector job needs its "
        "schema",
    }
    if reason in invalid:
        return ValidationError(invalid[reason], code=reason, jobId=job, clientId=client)
    return Conflict(conflicts.get(reason, f"Update refused: {reason}"), code=reason, jobId=job, clientId=client)
