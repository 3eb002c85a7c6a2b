"""What the request bodies' refusals say, field by field: the codes and messages clients rely on, for the
first field the model refuses (wire/explain.py)."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import ValidationError
from orchestrator.models import AGGREGATION_BACKENDS
from orchestrator.wire.explain import MISSING, Refusal, kind, says
from orchestrator.wire.features import parse_schema
from orchestrator.wire.values import MAX_DEADLINE_SECONDS, MAX_REASON, MAX_ROWS, MAX_TOTAL_CLIENTS

BACKENDS = tuple(sorted(AGGREGATION_BACKENDS))


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
    # For the message only: which number the client meant, if any.
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
        f"'{path}' must be the base64 of a raw 32-byte X25519 public key",
        code="missing_field" if value is MISSING or value is None else "invalid_public_key",
        field=path,
    )


REFUSALS: dict[str, Refusal] = {
    "job_id": _required(_id_refused),
    "client_id": _required(_id_refused),
    "total_clients": _required(_total_refused),
    "schema": _schema_refused,
    "deadline": _deadline_refused,
    "aggregation": says(f"'aggregation' must be one of {', '.join(BACKENDS)}, got {{value}}"),
    "vector": says("'vector' must be a base64 string", "invalid_vector"),
    "max_rows": _max_rows_refused,
    "public_key": _public_key_refused,
    "encryption_key": _public_key_refused,
    "min_clients": says(f"'minClients' must be an integer 1-{MAX_TOTAL_CLIENTS}, got {{value}}"),
    "round_timeout": says(f"'roundTimeout' must be a number of seconds between 0 and {MAX_DEADLINE_SECONDS}"),
    "reason": says(f"'reason' must be a string of at most {MAX_REASON} characters"),
    "status": says("'status' must be COMPLETED or FAILED"),
    "shares": _required(
        says(
            "'shares' must be a list of {{to, ciphertext}} (base64, at most 1024 characters), one per member "
            "of the keys round",
            "invalid_shares",
        )
    ),
    "self_mask_shares": _required(says("'selfMaskShares' must be a list of {{of, index, value}}", "invalid_shares")),
    "key_shares": _required(says("'keyShares' must be a list of {{of, index, value}}", "invalid_shares")),
}
KEY_REFUSALS = {**REFUSALS, "total_clients": _required(_key_total_refused)}
