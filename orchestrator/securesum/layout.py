"""The statistics vector of the `secure-sum` and `sum` backends: how a schema lays it out, how a client
computes its own from rows, and how the sum of every client's vector decodes into statistics.

Per feature, in schema order:
- BOOLEAN ``[notNull, true]``;
- NUMERIC ``[count, sum, sumOfSquares]`` in fixed point: each value is ``round(x * 10**scale)`` (the
  feature's declared ``scale``, default 0), and must lie within its declared ``bounds``;
- CATEGORICAL / NOMINAL / ORDINAL ``[notNull, count per declared category]``.

Every element is a signed 64-bit integer, sent as its two's complement (uint64, little-endian) so sums
run mod 2**64. A job declares how many rows a client may have (``maxRows``); with totalClients, the
bounds and the scale that says whether any sum could leave int64. If it could, the job is refused
(``check_capacity``) instead of letting a sum wrap; a client refuses rows beyond the bounds instead of
clipping them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import numpy as np

from orchestrator.errors import ValidationError
from orchestrator.securesum.statistics import InconsistentAggregate, decode_feature
from orchestrator.wire.features import Feature as SchemaFeature
from orchestrator.wire.features import parse_schema

INT64_MAX = 2**63 - 1
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


class LayoutError(ValueError):
    """The schema cannot be laid out as a statistics vector; ``field`` names where."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class OverflowRisk(ValueError):
    """Some sum of the job could leave the int64 range: refused before anything is sent or stored."""


class RowError(ValueError):
    """A row cannot be counted: a value of the wrong kind, outside its bounds or an undeclared category."""


@dataclass(frozen=True)
class Feature:
    name: str
    data_type: str
    offset: int
    length: int
    scale: int = 0
    bounds: tuple[Decimal, Decimal] | None = None
    categories: tuple[str, ...] = ()

    @property
    def max_scaled(self) -> int:
        """The largest |fixed-point value| a row may contribute (NUMERIC)."""
        assert self.bounds is not None
        factor = Decimal(10) ** self.scale
        return max(int((abs(b) * factor).to_integral_value(ROUND_HALF_EVEN)) for b in self.bounds)


@dataclass(frozen=True)
class VectorLayout:
    features: tuple[Feature, ...]
    length: int

    @classmethod
    def from_features(cls, schema: Sequence[SchemaFeature]) -> VectorLayout:
        """The layout of a validated schema; LayoutError if a feature has none (a NUMERIC one without
        bounds, a categorical one without categories, a declared offset/length other than its layout's)."""
        features: list[Feature] = []
        offset = 0
        for i, declared in enumerate(schema):
            feature = _feature(declared, offset, f"schema[{i}]")
            features.append(feature)
            offset += feature.length
        if not features:
            raise LayoutError("the schema has no features: there would be nothing to sum", "schema")
        return cls(tuple(features), offset)

    @classmethod
    def from_schema(cls, schema: Sequence[Mapping[str, Any]]) -> VectorLayout:
        """The layout of a schema as a client holds it (JSON-like dicts), validated first."""
        try:
            return cls.from_features(parse_schema(list(schema)))
        except ValidationError as e:
            raise LayoutError(e.message, str(e.details.get("field") or "schema")) from None

    def check_capacity(self, total_clients: int, max_rows: int) -> None:
        """OverflowRisk unless every sum of ``total_clients`` clients of up to ``max_rows`` rows each, within
        the declared bounds, fits int64."""
        rows = total_clients * max_rows
        if rows > INT64_MAX:
            raise OverflowRisk(f"{total_clients} clients x {max_rows} rows cannot be counted in 64 bits")
        for feature in self.features:
            if feature.data_type != "NUMERIC":
                continue
            largest = feature.max_scaled
            if rows * largest * largest > INT64_MAX:
                fits = INT64_MAX // max(largest * largest, 1) // total_clients
                raise OverflowRisk(
                    f"feature {feature.name!r}: {total_clients} clients x {max_rows} rows with |value| up to "
                    f"{max(abs(b) for b in feature.bounds or ()):g} at scale {feature.scale} could overflow the "
                    "64-bit sum of "
                    f"squares; at most {fits} rows per client fit (narrow the bounds, lower the scale or "
                    "lower maxRows)"
                )

    def encode(self, rows: Iterable[Mapping[str, Any]], *, max_rows: int | None = None) -> np.ndarray:
        """This client's statistics of ``rows`` as an int64 vector; RowError for a row that does not fit."""
        sums = [0] * self.length
        count = 0
        for count, row in enumerate(rows, start=1):
            if max_rows is not None and count > max_rows:
                raise RowError(f"more than maxRows={max_rows} rows")
            for feature in self.features:
                _count_value(feature, row.get(feature.name), sums, count)
        return np.array(sums, dtype=np.int64)

    def decode(self, total: np.ndarray, *, clients: int, max_rows: int | None = None) -> list[dict[str, Any]]:
        """Per-feature statistics of the summed vector (int64); InconsistentAggregate if it cannot be the sum
        of ``clients`` honest vectors of at most ``max_rows`` rows each (a client that masked with other keys
        than the job's makes the sum random, which these checks catch all but never)."""
        if total.shape != (self.length,):
            raise InconsistentAggregate(f"the sum has {total.size} values; the layout has {self.length}")
        values: list[int] = total.astype(np.int64).tolist()
        rows = INT64_MAX if max_rows is None else clients * max_rows
        return [decode_feature(f, values[f.offset : f.offset + f.length], rows) for f in self.features]


def _feature(declared: SchemaFeature, offset: int, where: str) -> Feature:
    name, data_type = declared.label, declared.data_type
    if data_type == "BOOLEAN":
        feature = Feature(name, data_type, offset, 2)
    elif data_type == "NUMERIC":
        feature = Feature(name, data_type, offset, 3, scale=declared.scale or 0, bounds=_bounds(declared, where))
    else:
        if not declared.categories:
            raise LayoutError(
                f"'{where}.categories' must list the {data_type} feature's distinct categories (non-empty strings)",
                f"{where}.categories",
            )
        categories = tuple(declared.categories)
        feature = Feature(name, data_type, offset, 1 + len(categories), categories=categories)
    if (declared.offset, declared.length) not in ((None, None), (feature.offset, feature.length)):
        raise LayoutError(
            f"'{where}' declares offset/length {declared.offset}/{declared.length}; its vector layout is "
            f"{feature.offset}/{feature.length}",
            where,
        )
    return feature


def _bounds(declared: SchemaFeature, where: str) -> tuple[Decimal, Decimal]:
    # A JSON body cannot carry an infinity (refused as it is read); a client's own schema can.
    if declared.bounds is None or not all(isinstance(b, int) or math.isfinite(b) for b in declared.bounds):
        raise LayoutError(
            f"'{where}.bounds' must be [min, max], two finite numbers with min <= max: a NUMERIC feature of a "
            "summed vector needs them to rule out overflow",
            f"{where}.bounds",
        )
    low, high = declared.bounds
    return Decimal(str(low)), Decimal(str(high))


def _count_value(feature: Feature, value: Any, sums: list[int], row: int) -> None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return  # null: counted nowhere, not even in notNull
    at = feature.offset
    if feature.data_type == "BOOLEAN":
        sums[at] += 1
        sums[at + 1] += _boolean(value, feature, row)
    elif feature.data_type == "NUMERIC":
        scaled = _fixed_point(value, feature, row)
        sums[at] += 1
        sums[at + 1] += scaled
        sums[at + 2] += scaled * scaled
    else:
        text = str(value).strip() if isinstance(value, str) else value
        try:
            index = feature.categories.index(text)
        except ValueError:
            raise RowError(
                f"row {row}, feature {feature.name!r}: {_short(value)} is not one of its declared categories"
            ) from None
        sums[at] += 1
        sums[at + 1 + index] += 1


def _boolean(value: Any, feature: Feature, row: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return int(value.strip().lower() in _TRUE)
    raise RowError(f"row {row}, feature {feature.name!r}: {_short(value)} is not a boolean")


def _fixed_point(value: Any, feature: Feature, row: int) -> int:
    assert feature.bounds is not None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise InvalidOperation
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
        if not number.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise RowError(f"row {row}, feature {feature.name!r}: {_short(value)} is not a finite number") from None
    low, high = feature.bounds
    if not low <= number <= high:
        raise RowError(
            f"row {row}, feature {feature.name!r}: {_short(value)} is outside the declared bounds [{low}, {high}]"
        )
    return int((number * Decimal(10) ** feature.scale).to_integral_value(ROUND_HALF_EVEN))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
