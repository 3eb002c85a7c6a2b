"""The request bodies: an update, a key registration, a cancel, a coordinator's callback. Decoding one
gives the domain request (models.py) or a ValidationError with the code and message clients rely on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from orchestrator.errors import ValidationError
from orchestrator.models import KeyRequest, UpdateRequest
from orchestrator.securesum.masking import InvalidPublicKey, encode_key, parse_public_key
from orchestrator.validation import ID_PATTERN, schema_digest, validate_id
from orchestrator.wire.explain import convert
from orchestrator.wire.features import Schema, canonical_schema, check_features
from orchestrator.wire.refusals import KEY_REFUSALS, REFUSALS
from orchestrator.wire.values import (
    MAX_DEADLINE_SECONDS,
    MAX_REASON,
    MAX_ROWS,
    MAX_TOTAL_CLIENTS,
    decode_vector,
    encodable,
    parse_deadline,
    whole_number,
)

Id = Annotated[
    str,
    Meta(
        pattern=f"^{ID_PATTERN.pattern}$",
        description="Letters, digits, '.', '_', ':' or '-'; not '.' or '..' (no URL path can carry them).",
        extra_json_schema={"not": {"enum": [".", ".."]}},
    ),
]
# Numeric strings are accepted because some clients serialise every field as a string: their patterns say
# the same range as the integers' (a final newline, which Python's $ lets through, is refused by values.whole_number).
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
    min_clients: Annotated[
        TotalClients | TotalDigits | None,
        Meta(
            description="k of n: the job completes at its deadline with at least this many reports "
            "(default totalClients)."
        ),
    ] = None


class KeyBody(msgspec.Struct, kw_only=True, rename="camel"):
    """POST /api/jobs/{jobId}/keys: a client's X25519 public key for a secure-sum job (the first creates it)."""

    client_id: Id
    total_clients: Annotated[KeyTotal | KeyTotalDigits, Meta(description="How many clients the job has (>= 2).")]
    public_key: Annotated[str, Meta(description="Base64 of the raw 32-byte X25519 public key for mask agreement.")]
    encryption_key: Annotated[
        str, Meta(description="Base64 of another raw 32-byte X25519 public key: peers encrypt their shares to it.")
    ]
    schema: Schema | None = None
    deadline: Deadline = None
    max_rows: MaxRows | MaxRowsDigits | None = None
    min_clients: Annotated[
        TotalClients | TotalDigits | None,
        Meta(
            description="The threshold k (> totalClients / 2; default totalClients): every round goes on with "
            "at least k clients, and k shares rebuild a dropped client's masks."
        ),
    ] = None
    round_timeout: Annotated[
        Seconds | None, Meta(description="Seconds each protocol round may take (default SECURE_SUM_ROUND_TIMEOUT).")
    ] = None


# A share bundle is ~200 bytes sealed; 1 KiB of base64 leaves room and bounds what a client can make us keep.
MAX_BUNDLE_TEXT = 1024
Bundle = Annotated[str, Meta(max_length=MAX_BUNDLE_TEXT, description="Base64 of the sealed share bundle.")]
ShareIndex = Annotated[int, Meta(ge=1, le=65535, description="The share's x: its holder's 1-based place in U1.")]


class ShareBundle(msgspec.Struct, kw_only=True):
    to: Annotated[Id, Meta(description="The member of U1 this bundle is sealed for (the poster itself included).")]
    ciphertext: Bundle


class SharesBody(msgspec.Struct, kw_only=True, rename="camel"):
    """POST /api/jobs/{jobId}/shares: a client's share bundles, one for every member of U1."""

    client_id: Id
    shares: Annotated[list[ShareBundle], Meta(max_length=MAX_TOTAL_CLIENTS)]


class RevealedShare(msgspec.Struct, kw_only=True):
    of: Annotated[Id, Meta(description="The client whose secret this is a share of.")]
    index: ShareIndex
    value: Annotated[str, Meta(max_length=64, description="Base64 of the share's value (16 or 32 bytes).")]


class UnmaskBody(msgspec.Struct, kw_only=True, rename="camel"):
    """POST /api/jobs/{jobId}/unmask: a survivor's shares of the survivors' self-mask seeds and of the
    dropped clients' mask keys (never both of one client)."""

    client_id: Id
    self_mask_shares: Annotated[list[RevealedShare], Meta(max_length=MAX_TOTAL_CLIENTS)]
    key_shares: Annotated[list[RevealedShare], Meta(max_length=MAX_TOTAL_CLIENTS)]


class CancelBody(msgspec.Struct, kw_only=True):
    """POST /api/jobs/{jobId}/cancel (the body is optional)."""

    reason: Annotated[
        Annotated[str, Meta(max_length=MAX_REASON)] | None, Meta(description="Why; shown as the job's reason.")
    ] = None


class CallbackBody(msgspec.Struct, kw_only=True):
    """POST /api/smpc/callback/{jobId}: the coordinator pushing a job's outcome (its other fields are kept)."""

    status: Literal["COMPLETED", "FAILED"]


def decode_update(data: Mapping[str, Any], *, now_ms: int) -> UpdateRequest:
    body = convert(data, UpdateBody, REFUSALS)
    job_id, client_id, total = _id(body.job_id, "jobId"), _id(body.client_id, "clientId"), _total(body.total_clients)
    return UpdateRequest(
        job_id=job_id,
        client_id=client_id,
        total_clients=total,
        aggregation=body.aggregation,
        vector=None if body.vector is None else decode_vector(body.vector),
        min_clients=_min_clients(body.min_clients, total),
        **_layout_fields(body, data.get("schema"), now_ms),
    )


def decode_key(job_id: str, data: Mapping[str, Any], *, now_ms: int) -> KeyRequest:
    body = convert(data, KeyBody, KEY_REFUSALS)
    client_id = _id(body.client_id, "clientId")
    total = _total(body.total_clients)
    mask_key, encryption_key = _x25519(body.public_key, "publicKey"), _x25519(body.encryption_key, "encryptionKey")
    if mask_key == encryption_key:
        raise ValidationError(
            "'encryptionKey' must be another key than 'publicKey' (one agrees masks, the other encrypts shares)",
            code="invalid_public_key",
            field="encryptionKey",
        )
    min_clients = _min_clients(body.min_clients, total)
    if min_clients is not None and 2 * min_clients <= total:
        raise ValidationError(
            f"'minClients' must be more than half of totalClients ({total}) for a secure sum, got {min_clients}: "
            "with fewer, the service and a minority of clients could rebuild one client's masks",
            code="threshold_too_low",
            field="minClients",
        )
    return KeyRequest(
        job_id=job_id,
        client_id=client_id,
        total_clients=total,
        public_key=mask_key,
        encryption_key=encryption_key,
        min_clients=min_clients,
        round_timeout_ms=None if body.round_timeout is None else max(1, int(body.round_timeout * 1000)),
        **_layout_fields(body, data.get("schema"), now_ms),
    )


def _x25519(text: str, name: str) -> str:
    """A public key's canonical base64 (one spelling per key, so a repeat is recognised as one)."""
    try:
        return encode_key(parse_public_key(text))
    except InvalidPublicKey as e:
        raise ValidationError(
            f"'{name}' is not a usable X25519 public key: {e}", code="invalid_public_key", field=name
        ) from None


def _min_clients(value: int | str | None, total: int) -> int | None:
    try:
        k = whole_number(value)
    except ValueError:
        raise REFUSALS["min_clients"]("minClients", value) from None
    if k is not None and k > total:
        raise ValidationError(
            f"'minClients' ({k}) cannot be more than totalClients ({total})",
            code="invalid_min_clients",
            field="minClients",
        )
    return k


def decode_cancel(data: Mapping[str, Any]) -> CancelBody:
    body = convert(data, CancelBody, REFUSALS)
    if body.reason is not None:
        encodable(body.reason, "reason")
    return body


def decode_shares(data: Mapping[str, Any]) -> SharesBody:
    body = convert(data, SharesBody, REFUSALS)
    _id(body.client_id, "clientId")
    for bundle in body.shares:
        _id(bundle.to, "shares.to")
    if len({b.to for b in body.shares}) != len(body.shares):
        raise ValidationError("'shares' names a recipient twice", code="invalid_shares", field="shares")
    return body


def decode_unmask(data: Mapping[str, Any]) -> UnmaskBody:
    body = convert(data, UnmaskBody, REFUSALS)
    _id(body.client_id, "clientId")
    for name, shares in (("selfMaskShares", body.self_mask_shares), ("keyShares", body.key_shares)):
        if len({s.of for s in shares}) != len(shares):
            raise ValidationError(f"'{name}' names a client twice", code="invalid_shares", field=name)
    return body


def decode_callback(data: Mapping[str, Any]) -> CallbackBody:
    return convert(data, CallbackBody, REFUSALS)


def _id(value: str, name: str) -> str:
    validate_id(value, name)  # the pattern held; the dot segments are refused there
    return value


def _total(value: int | str) -> int:
    try:
        total = whole_number(value)
    except ValueError:
        raise REFUSALS["total_clients"]("totalClients", value) from None
    assert total is not None
    return total


def _layout_fields(body: UpdateBody | KeyBody, raw_schema: Any, now_ms: int) -> dict[str, Any]:
    """What an update and a key registration both carry of the job they may create."""
    try:
        max_rows = whole_number(body.max_rows)
    except ValueError:
        raise REFUSALS["max_rows"]("maxRows", body.max_rows) from None
    schema_json = None
    if body.schema is not None:
        check_features(body.schema)
        schema_json = canonical_schema(raw_schema)
    return {
        "schema_json": schema_json,
        "schema_digest": schema_digest(schema_json),
        "deadline_ms": parse_deadline(body.deadline, now_ms),
        "max_rows": max_rows,
        "max_rows_declared": max_rows is not None,
    }
