"""The request bodies: an update, a key registration, a cancel, a coordinator's callback. Decoding one
gives the domain request (models.py) or a ValidationError with the code and message clients rely on."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from orchestrator.errors import ValidationError
from orchestrator.models import AGGREGATION_BACKENDS, KeyRequest, UpdateRequest
from orchestrator.securesum.masking import InvalidPublicKey, encode_key, parse_public_key
from orchestrator.validation import ID_PATTERN, schema_digest, validate_id
from orchestrator.wire.explain import MISSING, Refusal, convert, kind, short
from orchestrator.wire.features import Feature, Schema, canonical_schema, check_features, parse_schema

MAX_TOTAL_CLIENTS = 100_000
MAX_DEADLINE_SECONDS = 30 * 86400
MAX_ROWS = 10**12
MAX_REASON = 500
BACKENDS = tuple(sorted(AGGREGATION_BACKENDS))

Id = Annotated[
    str,
    Meta(
        pattern=f"^{ID_PATTERN.pattern}$",
        description="Letters, digits, '.', '_', ':' or '-'; not '.' or '..' (no URL path can carry them).",
        extra_json_schema={"not": {"enum": [".", ".."]}},
    ),
]
# Numeric strings are accepted because some clients serialise every field as a string: their patterns say
# the same range as the integers' (a final newline, which Python's $ lets through, is refused by _digits).
TotalClients = Annotated[int, Meta(ge=1, le=MAX_TOTAL_CLIENTS)]
TotalDigits = Annotated[str, Meta(pattern="^(0{0,6}[1-9][0-9]{0,4}|0?100000)$", max_length=7)]
KeyTotal = Annotated[int, Meta(ge=2, le=MAX_TOTAL_CLIENTS)]
KeyTotalDigits = Annotated[str, Meta(pattern="^(0{0,6}[2-9]|0{0,5}[1-9][0-9]{1,4}|0?100000)$", max_length=7)]
MaxRows = Annotated[int, Meta(ge=1, le=MAX_ROWS)]
MaxRowsDigits = Annotated[str, Meta(pattern="^(0{0,12}[1-9][0-9]{0,11}|0?1000000000000)$", max_length=13)]
Seconds = Annotated[int, Meta(gt=0, le=MAX_DEADLINE_SECONDS)] | Annotated[float, Meta(gt=0, le=MAX_DEADLINE_SECONDS)]
Deadline = Annotated[
    str | Seconds | None,
    Meta(
        description="When the job must have all its clients: an ISO 8601 time (UTC when it names no zone) or "
        f"seconds from now, at most {MAX_DEADLINE_SECONDS // 86400} days away."
    ),
]
# Stated for the document only: a regular expression over a vector of megabytes would cost more than reading
# it, and decode_vector checks the same (base64 of a non-empty multiple of 8 bytes).
_VECTOR_PATTERN = "^(?:[A-Za-z0-9+/]{32})*(?:[A-Za-z0-9+/]{32}|[A-Za-z0-9+/]{11}=|[A-Za-z0-9+/]{22}==)$"
Backend = Literal["none", "secure-sum", "smpc", "sum"]


class UpdateBody(msgspec.Struct, kw_only=True, rename="camel"):
    """POST /api/update: a client is done with its part of a job (the first update creates the job)."""

    job_id: Id
    client_id: Id
    total_clients: Annotated[TotalClients | TotalDigits, Meta(description="How many clients the job has.")]
    schema: Annotated[Schema | None, Meta(description="The job's features; every client sends the same.")] = None
    deadline: Deadline = None
    aggregation: Annotated[Backend | None, Meta(description="The job's aggregation backend.")] = None
    vector: Annotated[
        Annotated[str, Meta(extra_json_schema={"pattern": _VECTOR_PATTERN})] | None,
        Meta(description="Base64 of the client's statistics vector, little-endian uint64 values."),
    ] = None
    max_rows: Annotated[
        MaxRows | MaxRowsDigits | None, Meta(description="The most rows a client may count (summed-vector jobs).")
    ] = None


class KeyBody(msgspec.Struct, kw_only=True, rename="camel"):
    """POST /api/jobs/{jobId}/keys: a client's X25519 public key for a secure-sum job (the first creates it)."""

    client_id: Id
    total_clients: Annotated[KeyTotal | KeyTotalDigits, Meta(description="How many clients the job has (>= 2).")]
    public_key: Annotated[str, Meta(description="Base64 of the raw 32-byte X25519 public key.")]
    schema: Schema | None = None
    deadline: Deadline = None
    max_rows: MaxRows | MaxRowsDigits | None = None


class CancelBody(msgspec.Struct, kw_only=True):
    """POST /api/jobs/{jobId}/cancel (the body is optional)."""

    reason: Annotated[
        Annotated[str, Meta(max_length=MAX_REASON)] | None, Meta(description="Why; shown as the job's reason.")
    ] = None


class CallbackBody(msgspec.Struct, kw_only=True):
    """POST /api/smpc/callback/{jobId}: the coordinator pushing a job's outcome (its other fields are kept)."""

    status: Literal["COMPLETED", "FAILED"]


def decode_update(data: Mapping[str, Any], *, now_ms: int) -> UpdateRequest:
    body = convert(data, UpdateBody, _REFUSALS)
    schema_json = _schema_json(data.get("schema"), body.schema)
    return UpdateRequest(
        job_id=_id(body.job_id, "jobId"),
        client_id=_id(body.client_id, "clientId"),
        total_clients=_total(body.total_clients),
        schema_json=schema_json,
        schema_digest=schema_digest(schema_json),
        deadline_ms=parse_deadline(body.deadline, now_ms),
        aggregation=body.aggregation,
        vector=None if body.vector is None else decode_vector(body.vector),
        max_rows=_max_rows(body.max_rows),
        max_rows_declared=body.max_rows is not None,
    )


def decode_key(job_id: str, data: Mapping[str, Any], *, now_ms: int) -> KeyRequest:
    body = convert(data, KeyBody, _KEY_REFUSALS)
    client_id = _id(body.client_id, "clientId")
    total = _total(body.total_clients)
    try:
        raw = parse_public_key(body.public_key)
    except InvalidPublicKey as e:
        raise ValidationError(
            f"'publicKey' is not a usable X25519 public key: {e}", code="invalid_public_key", field="publicKey"
        ) from None
    schema_json = _schema_json(data.get("schema"), body.schema)
    return KeyRequest(
        job_id=job_id,
        client_id=client_id,
        total_clients=total,
        schema_json=schema_json,
        public_key=encode_key(raw),  # one spelling per key, so a repeat is recognised as one
        schema_digest=schema_digest(schema_json),
        deadline_ms=parse_deadline(body.deadline, now_ms),
        max_rows=_max_rows(body.max_rows),
        max_rows_declared=body.max_rows is not None,
    )


def decode_cancel(data: Mapping[str, Any]) -> CancelBody:
    body = convert(data, CancelBody, _REFUSALS)
    if body.reason is not None:
        encodable(body.reason, "reason")
    return body


def decode_callback(data: Mapping[str, Any]) -> CallbackBody:
    return convert(data, CallbackBody, _REFUSALS)


def decode_vector(text: str) -> bytes:
    """``vector``: base64 of the little-endian uint64 values."""
    try:
        raw = base64.b64decode(text, validate=True)
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


def parse_deadline(value: str | int | float | None, now_ms: int) -> int | None:
    """``deadline``: an ISO 8601 time (UTC when it names no zone) or a number of seconds from now."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            deadline = int(when.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise _invalid("deadline", f"'deadline' is not an ISO 8601 time: {short(value)}") from None
    else:
        # Compared before any float arithmetic: an integer of 400 digits has no float.
        if not 0 < value <= MAX_DEADLINE_SECONDS or (isinstance(value, float) and not math.isfinite(value)):
            raise _invalid("deadline", f"'deadline' in seconds must be between 0 and {MAX_DEADLINE_SECONDS}")
        deadline = now_ms + int(value * 1000)
    if deadline <= now_ms:
        raise _invalid("deadline", "'deadline' is in the past")
    if deadline > now_ms + MAX_DEADLINE_SECONDS * 1000:
        raise _invalid("deadline", f"'deadline' is more than {MAX_DEADLINE_SECONDS // 86400} days away")
    return deadline


def encodable(text: str, field: str) -> str:
    """``text`` if it can be stored (UTF-8); a lone surrogate escape ("\\ud800") cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(field, f"'{field}' contains an unpaired surrogate escape") from None
    return text


def _id(value: str, name: str) -> str:
    validate_id(value, name)  # the pattern held; the dot segments are refused there
    return value


def _total(value: int | str) -> int:
    if isinstance(value, str) and not value.isdigit():
        raise _total_refused("totalClients", value)
    return int(value)


def _max_rows(value: int | str | None) -> int | None:
    if isinstance(value, str) and not value.isdigit():
        raise _max_rows_refused("maxRows", value)
    return None if value is None else int(value)


def _schema_json(raw: Any, features: list[Feature] | None) -> str | None:
    if features is None:
        return None
    check_features(features)
    return canonical_schema(raw)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_field", field=field)


def _required(refusal: Refusal) -> Refusal:
    def refuse(path: str, value: Any) -> ValidationError:
        if value is MISSING or value is None:
            return ValidationError(f"Missing required field '{path}'", code="missing_field", field=path)
        return refusal(path, value)

    return refuse


def _id_refused(path: str, value: Any) -> ValidationError:
    if not isinstance(value, str):
        return _invalid(path, f"'{path}' must be a string, got {kind(value)}")
    return _invalid(path, f"'{path}' must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")


def _total_refused(path: str, value: Any) -> ValidationError:
    number = _number(value, 7)
    if number is None:
        return _invalid(path, f"'{path}' must be an integer, got {kind(value)}")
    return _invalid(path, f"'{path}' must be between 1 and {MAX_TOTAL_CLIENTS}, got {number}")


def _key_total_refused(path: str, value: Any) -> ValidationError:
    if _number(value, 7) == 1:
        return _invalid(path, "a secure sum needs at least 2 clients (with one, the sum is that client's data)")
    return _total_refused(path, value)


def _number(value: Any, digits: int) -> int | None:
    """An integer, or a string of at most ``digits`` digits, as a number; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= digits:
        return int(value)
    return None


def _deadline_refused(path: str, value: Any) -> ValidationError:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _invalid(path, f"'deadline' in seconds must be between 0 and {MAX_DEADLINE_SECONDS}")
    return _invalid(path, "'deadline' must be an ISO 8601 time or a number of seconds from now")


def _max_rows_refused(path: str, value: Any) -> ValidationError:
    return _invalid(path, f"'{path}' must be an integer 1-{MAX_ROWS}")


def _schema_refused(path: str, value: Any) -> ValidationError:
    try:
        parse_schema(value)
    except ValidationError as e:
        return e
    return ValidationError("'schema' is not valid", code="invalid_schema", field="schema")


def _public_key_refused(path: str, value: Any) -> ValidationError:
    return ValidationError(
        "'publicKey' must be the base64 of a raw 32-byte X25519 public key",
        code="missing_field" if value is MISSING or value is None else "invalid_public_key",
        field=path,
    )


def _says(message: str, code: str = "invalid_field") -> Refusal:
    return lambda path, value: ValidationError(message.format(value=short(value)), code=code, field=path)


_REFUSALS: dict[str, Refusal] = {
    "job_id": _required(_id_refused),
    "client_id": _required(_id_refused),
    "total_clients": _required(_total_refused),
    "schema": _schema_refused,
    "deadline": _deadline_refused,
    "aggregation": _says(f"'aggregation' must be one of {', '.join(BACKENDS)}, got {{value}}"),
    "vector": _says("'vector' must be a base64 string", "invalid_vector"),
    "max_rows": _max_rows_refused,
    "public_key": _public_key_refused,
    "reason": _says(f"'reason' must be a string of at most {MAX_REASON} characters"),
    "status": _says("'status' must be COMPLETED or FAILED"),
}
_KEY_REFUSALS = {**_REFUSALS, "total_clients": _required(_key_total_refused)}
