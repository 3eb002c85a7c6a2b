"""Decoding an aggregated vector into per-feature statistics (DESIGN.md, "Decoding").

The vector is the element-wise sum of every client's vector, cut into features by the schema's
offset/length (or, for the short schema form, by each type's default layout). Field names follow the
original service (`featureName`, `dataType`, `aggregatedNotNull`, `aggregatedTrue`, `percentage`); a
value that is a sum across clients of a per-client statistic (a minimum, an average, a quantile) is
named for what it is, `sumOf<Field>`, because an average of averages is not an average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.wire.features import DEFAULT_FIELDS, Feature

Number = int | float

_SECURE_SUM_NUMERIC = ["count", "sum", "sumOfSquares"]
# No sum of statistics the clients send comes near this; anything beyond is a broken aggregate.
MAX_VALUE = 1e18


class DecodingError(ValueError):
    """The aggregate does not fit the schema; the message says how (it becomes the job's failure reason)."""


@dataclass(frozen=True)
class FeatureLayout:
    name: str
    data_type: str
    offset: int
    fields: list[str]
    categories: list[str] | None


def layout(schema: Sequence[Feature]) -> list[FeatureLayout]:
    """Each feature's place in the vector and the name of each of its values."""
    features: list[FeatureLayout] = []
    position = 0
    for feature in schema:
        categories = feature.categories
        fields = feature.fields
        if not fields:
            fields = ["numOfNotNull", *categories] if categories else list(DEFAULT_FIELDS[feature.data_type])
            if feature.length is not None and len(fields) != feature.length:
                fields = [f"field{i}" for i in range(feature.length)]
        offset = feature.offset if feature.offset is not None else position
        copied = None if categories is None else list(categories)  # the cached features are shared
        features.append(FeatureLayout(feature.label, feature.data_type, offset, list(fields), copied))
        position = max(position, offset + len(fields))
    return features


def expected_length(schema: Sequence[Feature]) -> int:
    """How many values the schema describes, without building anything per value."""
    position = 0
    for feature in schema:
        offset = feature.offset if feature.offset is not None else position
        position = max(position, offset + feature.size)
    return position


def parse_number(value: Any, index: int) -> Number:
    """A value of the aggregate: a number, or a numeric string as some coordinators send."""
    if isinstance(value, bool):
        raise DecodingError(f"value {index} is a boolean, not a number")
    if isinstance(value, int):
        if abs(value) > MAX_VALUE:
            raise DecodingError(f"value {index} is out of range: {str(value)[:40]}")
        return value
    if isinstance(value, float):
        number: Number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise DecodingError(f"value {index} is not a number: {value[:40]!r}") from None
    else:
        raise DecodingError(f"value {index} is not a number: {type(value).__name__}")
    if isinstance(number, float) and not math.isfinite(number):
        raise DecodingError(f"value {index} is not finite: {value!r}")
    if abs(number) > MAX_VALUE:
        raise DecodingError(f"value {index} is out of range: {str(value)[:40]}")
    if isinstance(number, float) and number.is_integer() and abs(number) < 2**53:
        return int(number)
    return number


def decode(schema: Sequence[Feature], output: Sequence[Any], *, clients: int) -> list[dict[str, Any]]:
    """Per-feature statistics from the aggregated ``output``; DecodingError if it does not fit."""
    if not isinstance(output, (list, tuple)):
        raise DecodingError(f"the aggregate is not a list of numbers but {type(output).__name__}")
    expected = expected_length(schema)
    # Checked before laying the schema out value by value: a wrong output must cost nothing.
    if len(output) != expected:
        raise DecodingError(f"the aggregate has {len(output)} values; the schema describes {expected}")
    features = layout(schema)
    values = [parse_number(v, i) for i, v in enumerate(output)]
    return [_decode_feature(f, values[f.offset : f.offset + len(f.fields)], clients) for f in features]


def _decode_feature(feature: FeatureLayout, values: list[Number], clients: int) -> dict[str, Any]:
    by_field = dict(zip(feature.fields, values, strict=True))
    result: dict[str, Any] = {"featureName": feature.name, "dataType": feature.data_type}
    if feature.data_type == "NUMERIC" and feature.fields == _SECURE_SUM_NUMERIC:
        result.update(_moments(by_field["count"], by_field["sum"], by_field["sumOfSquares"]))
        return result
    not_null = by_field.get("numOfNotNull")
    if not_null is not None:
        result["aggregatedNotNull"] = not_null
    if feature.data_type == "BOOLEAN" and "numOfTrue" in by_field:
        true = by_field["numOfTrue"]
        result["aggregatedTrue"] = true
        result["aggregatedFalse"] = (not_null - true) if not_null is not None else None
        result["percentage"] = round(100 * true / not_null, 2) if not_null else 0.0
        return result
    if feature.categories:
        missing = [c for c in feature.categories if c not in by_field]
        if missing:
            # Never a default: a count that is not in the aggregate is unknown, not zero.
            raise DecodingError(
                f"feature {feature.name!r}: the aggregate has no value for categor{'ies' if len(missing) > 1 else 'y'} "
                f"{', '.join(repr(c) for c in missing[:5])}"
            )
        counts = {c: by_field[c] for c in feature.categories}
        result["categoryCounts"] = counts
        total = not_null if not_null else sum(counts.values())
        result["categoryShares"] = {c: round(100 * n / total, 2) if total else 0.0 for c, n in counts.items()}
        return result
    for field, value in by_field.items():
        if field != "numOfNotNull":
            result["sumOf" + field[:1].upper() + field[1:]] = value
    if feature.data_type == "NUMERIC" and "avg" in by_field and clients:
        # Each client's average, averaged: not the mean of all values unless every client has as many.
        result["meanOfClientAverages"] = by_field["avg"] / clients
    return result


def _moments(count: Number, total: Number, squares: Number) -> dict[str, Any]:
    mean = total / count if count else None
    variance = None
    if count and count > 1:
        variance = max((squares - total * total / count) / (count - 1), 0.0)
    return {
        "aggregatedNotNull": count,
        "count": count,
        "sum": total,
        "mean": mean,
        "variance": variance,
        "std": math.sqrt(variance) if variance is not None else None,
    }
