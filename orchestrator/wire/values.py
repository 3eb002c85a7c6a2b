"""Single values of a request that need more than a type: a vector's base64, a deadline, storable text."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from orchestrator.errors import ValidationError
from orchestrator.wire.explain import short

MAX_TOTAL_CLIENTS = 100_000
MAX_DEADLINE_SECONDS = 30 * 86400
MAX_ROWS = 10**12
MAX_REASON = 500


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
        # The model has held seconds to (0, MAX_DEADLINE_SECONDS]: a finite number, whatever its digits.
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


def whole_number(value: int | str | None) -> int | None:
    """A count the model has typed as an integer or a string of digits, as an integer; ValueError for a
    string the model's pattern let through with a final newline (Python's $ matches before it)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError(value)
    return None if value is None else int(value)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_field", field=field)
