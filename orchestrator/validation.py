"""Parsing and validating what clients send; every failure is a ValidationError naming the field."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from orchestrator.errors import ValidationError
from orchestrator.models import AGGREGATION_BACKENDS, DATA_TYPES, JobStatus, UpdateRequest

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DOT_SEGMENTS = frozenset({".", ".."})
MAX_TOTAL_CLIENTS = 100_000
MAX_SCHEMA_FEATURES = 10_000
MAX_NAME_LENGTH = 256
MAX_PAGE = 500
MAX_DEADLINE_SECONDS = 30 * 86400
# The longest statistics vector a schema may describe (offset + length), and the most categories.
MAX_VECTOR = 1_000_000
CATEGORICAL_TYPES = frozenset({"CATEGORICAL", "NOMINAL", "ORDINAL"})


def schema_digest(schema_json: str | None) -> str:
    """What the scripts compare schemas by: loading a large stored schema on every update would cost more
    than the update."""
    return hashlib.sha1(schema_json.encode(), usedforsecurity=False).hexdigest() if schema_json else ""


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a ValidationError saying why it is not one."""
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
    if not isinstance(data, dict):
        raise ValidationError(f"Request body must be a JSON object, got {_kind(data)}", code="invalid_body")
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


def encodable(text: str, field: str) -> str:
    """``text`` if it can be stored (UTF-8); a lone surrogate escape ("\\ud800") cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"'{field}' contains an unpaired surrogate escape", code="invalid_field", field=field
        ) from None
    return text


def parse_update(data: dict[str, Any], *, now_ms: int | None = None) -> UpdateRequest:
    job_id = parse_id(data, "jobId")
    client_id = parse_id(data, "clientId")
    total = parse_total(data)
    schema = data.get("schema")
    schema_json = None if schema is None else canonical_schema(schema)
    return UpdateRequest(
        job_id=job_id,
        client_id=client_id,
        total_clients=total,
        schema_json=schema_json,
        schema_digest=schema_digest(schema_json),
        deadline_ms=parse_deadline(data.get("deadline"), now_ms if now_ms is not None else int(time.time() * 1000)),
        aggregation=_parse_aggregation(data.get("aggregation")),
    )


def parse_deadline(value: Any, now_ms: int) -> int | None:
    """``deadline``: an ISO 8601 time (UTC when it names no zone) or a number of seconds from now."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError(
            "'deadline' must be an ISO 8601 time or a number of seconds from now",
            code="invalid_field",
            field="deadline",
        )
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            deadline = int(when.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise ValidationError(
                f"'deadline' is not an ISO 8601 time: {_short(value)}", code="invalid_field", field="deadline"
            ) from None
    else:
        # Compared before any float arithmetic: an integer of 400 digits has no float.
        if not 0 < value <= MAX_DEADLINE_SECONDS or (isinstance(value, float) and not math.isfinite(value)):
            raise ValidationError(
                f"'deadline' in seconds must be between 0 and {MAX_DEADLINE_SECONDS}",
                code="invalid_field",
                field="deadline",
            )
        deadline = now_ms + int(value * 1000)
    if deadline <= now_ms:
        raise ValidationError("'deadline' is in the past", code="invalid_field", field="deadline")
    if deadline > now_ms + MAX_DEADLINE_SECONDS * 1000:
        raise ValidationError(
            f"'deadline' is more than {MAX_DEADLINE_SECONDS // 86400} days away", code="invalid_field", field="deadline"
        )
    return deadline


def _parse_aggregation(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in AGGREGATION_BACKENDS:
        raise ValidationError(
            f"'aggregation' must be one of {', '.join(sorted(AGGREGATION_BACKENDS))}, got {_short(value)}",
            code="invalid_field",
            field="aggregation",
        )
    return str(value)


def parse_id(data: dict[str, Any], name: str) -> str:
    if name not in data or data[name] is None:
        raise ValidationError(f"Missing required field '{name}'", code="missing_field", field=name)
    value = data[name]
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' must be a string, got {_kind(value)}", code="invalid_field", field=name)
    validate_id(value, name)
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


def parse_total(data: dict[str, Any]) -> int:
    if "totalClients" not in data or data["totalClients"] is None:
        raise ValidationError("Missing required field 'totalClients'", code="missing_field", field="totalClients")
    value = data["totalClients"]
    # Numeric strings are accepted because some clients serialise every field as a string.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 7:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"'totalClients' must be an integer, got {_kind(value)}", code="invalid_field", field="totalClients"
        )
    if not 1 <= value <= MAX_TOTAL_CLIENTS:
        raise ValidationError(
            f"'totalClients' must be between 1 and {MAX_TOTAL_CLIENTS}, got {value}",
            code="invalid_field",
            field="totalClients",
        )
    return value


def canonical_schema(schema: Any) -> str:
    """Validate a schema (detailed or short form) and return it as canonical JSON for comparison."""
    if not isinstance(schema, list):
        raise ValidationError(f"'schema' must be a list, got {_kind(schema)}", code="invalid_schema", field="schema")
    if len(schema) > MAX_SCHEMA_FEATURES:
        raise ValidationError(
            f"'schema' has {len(schema)} features; at most {MAX_SCHEMA_FEATURES} are allowed",
            code="invalid_schema",
            field="schema",
        )
    names: set[str] = set()
    spans: list[tuple[int, int, int]] = []
    for i, feature in enumerate(schema):
        where = f"schema[{i}]"
        if not isinstance(feature, dict):
            raise ValidationError(
                f"'{where}' must be an object, got {_kind(feature)}", code="invalid_schema", field=where
            )
        name = _feature_name(feature, where)
        if name in names:
            raise ValidationError(f"'{where}': duplicate feature name {name!r}", code="invalid_schema", field=where)
        names.add(name)
        data_type = feature.get("dataType")
        if not isinstance(data_type, str) or data_type not in DATA_TYPES:
            raise ValidationError(
                f"'{where}.dataType' must be one of {', '.join(sorted(DATA_TYPES))}, got {_short(data_type)}",
                code="invalid_schema",
                field=f"{where}.dataType",
            )
        offset = _optional_count(feature, "offset", where)
        length = _optional_count(feature, "length", where)
        if (offset is None) != (length is None):
            raise ValidationError(
                f"'{where}' must give 'offset' and 'length' together", code="invalid_schema", field=where
            )
        if offset is not None and length is not None:
            spans.append((offset, length, i))
        fields = feature.get("fields")
        if fields is not None and not (isinstance(fields, list) and _all_strings(fields)):
            raise ValidationError(
                f"'{where}.fields' must be a list of strings", code="invalid_schema", field=f"{where}.fields"
            )
        if fields is not None and len(set(fields)) != len(fields):
            raise ValidationError(
                f"'{where}.fields' names a field twice", code="invalid_schema", field=f"{where}.fields"
            )
        _check_declarations(feature, where)
        if fields is not None and length is not None and len(fields) != length:
            raise ValidationError(
                f"'{where}.fields' has {len(fields)} names but 'length' is {length}",
                code="invalid_schema",
                field=f"{where}.fields",
            )
        if feature.get("categories") is not None:
            _check_categories_fit(feature["categories"], data_type, fields, length, where)
    for offset, length, i in spans:
        if offset + length > MAX_VECTOR:
            raise ValidationError(
                f"'schema[{i}]' ends at {offset + length}; a schema may describe at most {MAX_VECTOR} values",
                code="invalid_schema",
                field=f"schema[{i}]",
            )
    spans.sort()
    for (off_a, len_a, i_a), (off_b, _, i_b) in itertools.pairwise(spans):
        if off_a + len_a > off_b:
            raise ValidationError(
                f"'schema[{i_a}]' and 'schema[{i_b}]' overlap (offset {off_a} + length {len_a} > offset {off_b})",
                code="invalid_schema",
                field="schema",
            )
    return encodable(json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False), "schema")


def _check_declarations(feature: dict[str, Any], where: str) -> None:
    """`categories`, `bounds` and `scale`, when a feature declares them, are what they say."""
    categories = feature.get("categories")
    if categories is not None and not (
        isinstance(categories, list)
        and 0 < len(categories) <= MAX_VECTOR
        and _all_strings(categories)
        and len(set(categories)) == len(categories)
        and "" not in categories
    ):
        raise ValidationError(
            f"'{where}.categories' must be a list of distinct non-empty strings",
            code="invalid_schema",
            field=f"{where}.categories",
        )
    bounds = feature.get("bounds")
    if bounds is not None and not (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        and bounds[0] <= bounds[1]
    ):
        raise ValidationError(
            f"'{where}.bounds' must be [min, max], two numbers with min <= max",
            code="invalid_schema",
            field=f"{where}.bounds",
        )
    scale = feature.get("scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 12):
        raise ValidationError(
            f"'{where}.scale' must be an integer 0-12 (decimal places)", code="invalid_schema", field=f"{where}.scale"
        )


def _check_categories_fit(
    categories: list[str], data_type: str, fields: list[str] | None, length: int | None, where: str
) -> None:
    """Declared categories say where each category's count is: the feature's values are ``numOfNotNull`` and
    one count per category (in ``fields`` order when the feature names its fields). A layout that disagrees
    would decode as counts of nothing, so it is refused here rather than published as zeros."""
    if data_type not in CATEGORICAL_TYPES:
        raise ValidationError(
            f"'{where}.categories' is for {', '.join(sorted(CATEGORICAL_TYPES))} features, not {data_type}",
            code="invalid_schema",
            field=f"{where}.categories",
        )
    if "numOfNotNull" in categories:
        raise ValidationError(
            f"'{where}.categories' may not name a category numOfNotNull (the not-null count's field)",
            code="invalid_schema",
            field=f"{where}.categories",
        )
    if fields is not None:
        extra = set(fields) - set(categories) - {"numOfNotNull"}
        missing = [c for c in categories if c not in set(fields)]
        if extra or missing:
            named = ", ".join(repr(f) for f in [*sorted(extra), *missing][:3])
            raise ValidationError(
                f"'{where}.fields' must be numOfNotNull and the declared categories, one field each "
                f"({'unknown' if extra else 'missing'}: {named})",
                code="invalid_schema",
                field=f"{where}.fields",
            )
    expected = len(fields) if fields is not None else 1 + len(categories)
    if length is not None and length != expected:
        raise ValidationError(
            f"'{where}' declares length {length}, but its {len(categories)} categories take {expected} values "
            "(numOfNotNull, then one count per category)",
            code="invalid_schema",
            field=f"{where}.length",
        )


def _all_strings(values: list[Any]) -> bool:
    # At C speed: a schema may list a million categories.
    return set(map(type, values)) <= {str}


def _feature_name(feature: dict[str, Any], where: str) -> str:
    name = feature.get("featureName", feature.get("name"))
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValidationError(
            f"'{where}' needs 'featureName' or 'name': a string of 1-{MAX_NAME_LENGTH} characters",
            code="invalid_schema",
            field=where,
        )
    return name


def _optional_count(feature: dict[str, Any], key: str, where: str) -> int | None:
    value = feature.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > MAX_VECTOR:
        raise ValidationError(
            f"'{where}.{key}' must be a non-negative integer, got {_short(value)}",
            code="invalid_schema",
            field=f"{where}.{key}",
        )
    return value


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


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return _kind(value)
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
