"""What a request carries besides its body model (wire/): path ids, query parameters, and the body read as
a JSON object. Every failure is a ValidationError naming the field."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import msgspec

from orchestrator.errors import ValidationError
from orchestrator.models import JobStatus
from orchestrator.wire.explain import kind

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DOT_SEGMENTS = frozenset({".", ".."})
MAX_PAGE = 500


def schema_digest(schema_json: str | None) -> str:
    """What the scripts compare schemas by: loading a large stored schema on every update would cost more
    than the update."""
    return hashlib.sha1(schema_json.encode(), usedforsecurity=False).hexdigest() if schema_json else ""


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a ValidationError saying why it is not one."""
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        # Refused or out of range: the standard library's reading says why, line and column, as always (and
        # takes what msgspec does not: a lone surrogate escape, refused field by field where it matters).
        data = _parse_slowly(body)
    if not isinstance(data, dict):
        raise ValidationError(f"Request body must be a JSON object, got {kind(data)}", code="invalid_body")
    return data


def _parse_slowly(body: bytes) -> Any:
    if not body.strip():
        raise ValidationError("Request body is empty; a JSON object is required", code="invalid_json")
    try:
        data = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise ValidationError("Request body is not valid UTF-8", code="invalid_json") from None
    except json.JSONDecodeError as e:
        raise ValidationError(
            f"Malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", code="invalid_json"
        ) from None
    except (ValueError, RecursionError):
        raise ValidationError("Malformed JSON: nested too deeply or not decodable", code="invalid_json") from None
    return data


def _refuse_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON: stored, they would make every later
    # response (and the dashboard's parser) choke.
    raise ValidationError(f"Malformed JSON: {name} is not a JSON value", code="invalid_json")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but no double: json.loads would make it Infinity, which is not JSON and would be
    # stored and served as such.
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError(
            f"Malformed JSON: the number {text[:40]} is beyond the range of a double", code="invalid_json"
        )
    return value


def validate_id(value: str, name: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise ValidationError(
            f"'{name}' must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
            code="invalid_field",
            field=name,
        )
    if value in _DOT_SEGMENTS:
        # A URL path cannot carry them: clients (this project's too) normalise /api/jobs/.. away (RFC 3986).
        raise ValidationError(
            f"'{name}' may not be {value!r}: a URL path cannot carry it as a segment", code="invalid_id", field=name
        )


def parse_status(raw: str | None) -> JobStatus | None:
    if raw is None or raw == "":
        return None
    try:
        return JobStatus(raw.upper())
    except ValueError:
        raise ValidationError(
            f"'status' must be one of {', '.join(s.value for s in JobStatus)}", code="invalid_query", field="status"
        ) from None


def parse_limit(raw: str | None, default: int = 50) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ValidationError(f"'limit' must be an integer 1-{MAX_PAGE}", code="invalid_query", field="limit")
    return int(raw)


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    if raw is None or raw == "":
        return None
    score, sep, job_id = raw.partition(":")
    if not sep or not (score.isascii() and score.isdigit()) or len(score) > 15 or not ID_PATTERN.fullmatch(job_id):
        raise ValidationError("'cursor' is not one this service returned", code="invalid_query", field="cursor")
    return int(score), job_id
