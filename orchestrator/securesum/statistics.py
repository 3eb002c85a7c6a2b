"""The statistics of a summed vector, feature by feature: exact integer sums until the last division, and
checks that refuse a sum no honest clients could produce (securesum/layout.py lays the vector out)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.securesum.layout import Feature


class InconsistentAggregate(ValueError):
    """The summed vector cannot be a sum of honest vectors (a client masked with the wrong keys, say)."""


def decode_feature(feature: Feature, values: list[int], rows: int) -> dict[str, Any]:
    result: dict[str, Any] = {"featureName": feature.name, "dataType": feature.data_type}
    _check(0 <= values[0] <= rows, feature, f"a count of {values[0]} outside 0..{rows} rows")
    if feature.data_type == "BOOLEAN":
        not_null, true = values
        _check(0 <= true <= not_null, feature, "the count of true values is negative or above the not-null count")
        result.update(
            aggregatedNotNull=not_null,
            aggregatedTrue=true,
            aggregatedFalse=not_null - true,
            percentage=round(100 * true / not_null, 2) if not_null else 0.0,
        )
    elif feature.data_type == "NUMERIC":
        count, total, squares = values
        assert feature.bounds is not None
        unit = Decimal(10) ** feature.scale
        low, high = (int((b * unit).to_integral_value(ROUND_HALF_EVEN)) for b in feature.bounds)
        largest = feature.max_scaled
        # Within the bounds: count*low <= sum <= count*high, 0 <= squares <= count*largest^2; and
        # Cauchy-Schwarz, sum^2 <= count * squares.
        _check(
            count * low <= total <= count * high
            and 0 <= squares <= count * largest * largest
            and total * total <= count * squares,
            feature,
            "moments no rows within the declared bounds can have",
        )
        result.update(_moments(count, total, squares, feature))
    else:
        not_null, counts = values[0], values[1:]
        _check(
            not_null >= 0 and all(n >= 0 for n in counts) and sum(counts) == not_null,
            feature,
            "the category counts do not add up to the not-null count",
        )
        result.update(
            aggregatedNotNull=not_null,
            categoryCounts=dict(zip(feature.categories, counts, strict=True)),
            categoryShares={
                c: round(100 * n / not_null, 2) if not_null else 0.0
                for c, n in zip(feature.categories, counts, strict=True)
            },
        )
    return result


def _moments(count: int, total: int, squares: int, feature: Feature) -> dict[str, Any]:
    """count, sum, mean, sample variance and std, from exact integer sums: the only rounding is the final
    conversion to float."""
    unit = 10**feature.scale
    mean = variance = std = None
    if count:
        mean = float(Fraction(total, count * unit))
    if count > 1:
        # (n * sum(x^2) - (sum x)^2) / (n (n - 1)), exact in integers before the one division.
        exact = Fraction(count * squares - total * total, count * (count - 1) * unit * unit)
        variance = float(exact)
        std = math.sqrt(variance)
    assert feature.bounds is not None
    return {
        "aggregatedNotNull": count,
        "count": count,
        "sum": total if feature.scale == 0 else float(Fraction(total, unit)),
        "mean": mean,
        "variance": variance,
        "std": std,
        "scale": feature.scale,
        "bounds": [int(b) if b == b.to_integral_value() else float(b) for b in feature.bounds],
    }


def _check(condition: bool, feature: Feature, what: str) -> None:
    if not condition:
        raise InconsistentAggregate(
            f"feature {feature.name!r}: {what}; the sum cannot come from honest vectors (did a client mask with "
            "other keys than the job's?)"
        )
