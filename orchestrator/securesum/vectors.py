"""Parsing what the summed-vector backends add to requests: vectors, maxRows, public keys, layouts."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orchestrator.errors import ApiError, ValidationError
from orchestrator.models import VECTOR_BACKENDS, KeyRequest, UpdateRequest
from orchestrator.securesum.layout import LayoutError, OverflowRisk, VectorLayout
from orchestrator.securesum.masking import InvalidPublicKey, encode_key, parse_public_key
from orchestrator.settings import Settings
from orchestrator.validation import canonical_schema, parse_deadline, parse_id, parse_total, parse_update, schema_digest

MAX_ROWS = 10**12


def parse_vector(value: Any) -> bytes | None:
    """``vector``: base64 of the little-endian uint64 values."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("'vector' must be a base64 string", code="invalid_vector", field="vector")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("'vector' is not valid base64", code="invalid_vector", field="vector") from None
    return check_vector(raw)


def check_vector(raw: bytes) -> bytes:
    if not raw or len(raw) % 8:
        raise ValidationError(
            f"the vector has {len(raw)} bytes; it must be a non-empty sequence of 8-byte little-endian integers",
            code="invalid_vector",
            field="vector",
        )
    return raw


def parse_max_rows(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 13:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROWS:
        raise ValidationError(f"'maxRows' must be an integer 1-{MAX_ROWS}", code="invalid_field", field="maxRows")
    return value


@functools.lru_cache(maxsize=8)
def layout_of(schema_json: str) -> VectorLayout:
    """The layout of a canonical schema, built once per job (per process): every client of a job sends the
    same schema, and laying out a million categories takes as long as reading them."""
    return VectorLayout.from_schema(json.loads(schema_json))


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


def layout_fields(
    data: dict[str, Any], schema_json: str | None, total_clients: int, settings: Settings
) -> tuple[dict[str, Any], ValidationError | None]:
    """What a request that may create a summed-vector job carries of its layout (the fields of the same
    names in UpdateRequest and KeyRequest), and the error that refuses creating the job, if any."""
    max_rows = parse_max_rows(data.get("maxRows"), settings.vector_max_rows)
    layout, refusal = (None, None) if schema_json is None else vector_layout(schema_json, total_clients, max_rows)
    fields = {
        "vector_length": None if layout is None else layout.length,
        "max_rows": max_rows,
        "max_rows_declared": data.get("maxRows") is not None,
        "creation_refusal": refusal.code if refusal else "",
    }
    return fields, refusal


def with_vector_layout(
    req: UpdateRequest, data: dict[str, Any], settings: Settings
) -> tuple[UpdateRequest, ValidationError | None]:
    """``req`` with what a summed-vector job it may create needs (the job's own layout wins if it exists),
    and the error that refuses creating it, if any."""
    backend = req.aggregation or settings.aggregation_backend
    if backend not in VECTOR_BACKENDS:
        return req, None
    if req.schema_json is None:
        return replace(req, aggregation=backend), None  # the job exists, or the update is refused for want of one
    fields, refusal = layout_fields(data, req.schema_json, req.total_clients, settings)
    return replace(req, aggregation=backend, **fields), refusal


def binary_update(query: Mapping[str, str], body: bytes) -> UpdateRequest:
    """An update whose body is the vector itself (application/octet-stream); the rest is in the query
    string: jobId, clientId, totalClients and, optionally, aggregation."""
    data: dict[str, Any] = {name: query.get(name) for name in ("jobId", "clientId", "totalClients", "aggregation")}
    return replace(parse_update(data), vector=check_vector(body))


def refusal(detail: str, req: UpdateRequest) -> ApiError:
    """The error for an update the UPDATE script refused (``detail``: its reason, maybe ':'-suffixed)."""
    reason, _, extra = detail.partition(":")
    job, client = req.job_id, req.client_id
    given = len(req.vector or b"") // 8
    errors: dict[str, tuple[int, str]] = {
        "keys_incomplete": (
            409,
            f"The key round of job {job} is not complete: register every client's public key "
            "(POST /api/jobs/{jobId}/keys) and wait for keys.complete before sending vectors",
        ),
        "not_a_participant": (409, f"Client {client} registered no public key for job {job}"),
        "vector_required": (400, f"Job {job} sums its clients' statistics: the update needs a 'vector'"),
        "vector_not_expected": (400, f"Job {job} does not sum vectors (its aggregation is not sum or secure-sum)"),
        "vector_length_mismatch": (400, f"The vector has {given} values; job {job}'s layout has {extra or 'more'}"),
        "schema_required": (
            400,
            f"Job {job} does not exist yet: the update that creates a summed-vector job needs its schema",
        ),
    }
    status, message = errors.get(reason, (409, f"Update refused: {reason}"))
    return ApiError(message, code=reason, http_status=status, jobId=job, clientId=client)


def parse_key_request(
    job_id: str, data: dict[str, Any], settings: Settings, now_ms: int
) -> tuple[KeyRequest, ValidationError | None]:
    """The key request, and the error that refuses creating its job, if any (see vector_layout)."""
    client_id = parse_id(data, "clientId")
    total = parse_total(data)
    if total < 2:
        raise ValidationError(
            "a secure sum needs at least 2 clients (with one, the sum is that client's data)",
            code="invalid_field",
            field="totalClients",
        )
    text = data.get("publicKey")
    if not isinstance(text, str):
        raise ValidationError(
            "'publicKey' must be the base64 of a raw 32-byte X25519 public key",
            code="missing_field" if text is None else "invalid_public_key",
            field="publicKey",
        )
    try:
        raw = parse_public_key(text)
    except InvalidPublicKey as e:
        raise ValidationError(
            f"'publicKey' is not a usable X25519 public key: {e}", code="invalid_public_key", field="publicKey"
        ) from None
    schema = data.get("schema")
    schema_json = None if schema is None else canonical_schema(schema)
    fields, refusal = layout_fields(data, schema_json, total, settings)
    request = KeyRequest(
        job_id=job_id,
        client_id=client_id,
        total_clients=total,
        schema_json=schema_json,
        public_key=encode_key(raw),  # one spelling per key, so a repeat is recognised as one
        schema_digest=schema_digest(schema_json),
        deadline_ms=parse_deadline(data.get("deadline"), now_ms),
        **fields,
    )
    return request, refusal
