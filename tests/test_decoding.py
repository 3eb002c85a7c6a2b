"""Decoding the aggregate into per-feature statistics (DESIGN.md, Decoding)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from orchestrator.aggregation import decoding
from orchestrator.aggregation.decoding import DecodingError
from orchestrator.wire.features import stored_features
from tests.support import DETAILED_SCHEMA, SHORT_SCHEMA


def decode(schema: list[dict[str, Any]], output: Any, *, clients: int) -> list[dict[str, Any]]:
    # As the worker reads a stored schema: typed, without the rules a schema is checked by when it arrives.
    return decoding.decode(stored_features(json.dumps(schema)), output, clients=clients)


# Three clients' sums: age (7 fields), isActive (2 fields), department (1 field).
OUTPUT = [1000, 54, 240, 135.6, 90, 135, 180, 1000, 750, 900]


def test_real_clients_schema() -> None:
    age, active, department = decode(DETAILED_SCHEMA, OUTPUT, clients=3)
    assert age == {
        "featureName": "age",
        "dataType": "NUMERIC",
        "aggregatedNotNull": 1000,
        "sumOfMin": 54,
        "sumOfMax": 240,
        "sumOfAvg": 135.6,
        "sumOfQ1": 90,
        "sumOfQ2": 135,
        "sumOfQ3": 180,
        "meanOfClientAverages": pytest.approx(45.2),
    }
    assert active == {
        "featureName": "isActive",
        "dataType": "BOOLEAN",
        "aggregatedNotNull": 1000,
        "aggregatedTrue": 750,
        "aggregatedFalse": 250,
        "percentage": 75.0,
    }
    assert department == {"featureName": "department", "dataType": "NOMINAL", "aggregatedNotNull": 900}


def test_numeric_strings_and_short_schema() -> None:
    strings = [str(v) for v in OUTPUT[:9]]
    age, active = decode(SHORT_SCHEMA, strings, clients=2)
    assert age["aggregatedNotNull"] == 1000 and age["sumOfAvg"] == 135.6
    assert active["percentage"] == 75.0
    assert decode([{"name": "b", "dataType": "BOOLEAN"}], ["3", "1"], clients=1)[0]["percentage"] == 33.33


def test_three_field_nominal_and_categories() -> None:
    schema: list[dict[str, Any]] = [
        {
            "featureName": "dept",
            "dataType": "NOMINAL",
            "offset": 0,
            "length": 3,
            "fields": ["numOfNotNull", "numOfDistinct", "mode"],
        },
        {"name": "colour", "dataType": "CATEGORICAL", "categories": ["red", "green", "blue"]},
    ]
    dept, colour = decode(schema, [10, 4, 2, 20, 10, 6, 4], clients=2)
    assert dept == {
        "featureName": "dept",
        "dataType": "NOMINAL",
        "aggregatedNotNull": 10,
        "sumOfNumOfDistinct": 4,
        "sumOfMode": 2,
    }
    assert colour["categoryCounts"] == {"red": 10, "green": 6, "blue": 4}
    assert colour["categoryShares"] == {"red": 50.0, "green": 30.0, "blue": 20.0}


def test_secure_sum_numeric_layout() -> None:
    schema = [{"name": "x", "dataType": "NUMERIC", "fields": ["count", "sum", "sumOfSquares"]}]
    # values 1, 2, 3, 4
    (x,) = decode(schema, [4, 10, 30], clients=2)
    assert (x["count"], x["sum"], x["mean"]) == (4, 10, 2.5)
    assert x["variance"] == pytest.approx(5 / 3)
    assert x["std"] == pytest.approx(math.sqrt(5 / 3))


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (OUTPUT[:-1], "has 9 values; the schema describes 10"),
        ([*OUTPUT, 1], "has 11 values; the schema describes 10"),
        ([*OUTPUT[:-1], "many"], "value 9 is not a number"),
        ([*OUTPUT[:-1], float("nan")], "value 9 is not finite"),
        ([*OUTPUT[:-1], "inf"], "value 9 is not finite"),
        ([*OUTPUT[:-1], True], "value 9 is a boolean"),
        ([*OUTPUT[:-1], None], "value 9 is not a number"),
        ([*OUTPUT[:-1], [1]], "value 9 is not a number"),
    ],
)
def test_malformed_outputs_fail_cleanly(output: list[Any], message: str) -> None:
    with pytest.raises(DecodingError, match=message):
        decode(DETAILED_SCHEMA, output, clients=3)


def test_not_a_list() -> None:
    with pytest.raises(DecodingError, match="not a list"):
        decode(DETAILED_SCHEMA, {"a": 1}, clients=3)


def test_declared_categories_decode_in_the_order_their_fields_name_them() -> None:
    schema = [
        {"featureName": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "C"], "offset": 0, "length": 4},
        {
            "featureName": "grade",
            "dataType": "ORDINAL",
            "categories": ["low", "high"],
            "offset": 4,
            "length": 3,
            "fields": ["high", "numOfNotNull", "low"],
        },
    ]
    blood, grade = decode(schema, [20, 10, 4, 6, 7, 9, 2], clients=2)
    assert blood["categoryCounts"] == {"A": 10, "B": 4, "C": 6}
    assert (grade["aggregatedNotNull"], grade["categoryCounts"]) == (9, {"low": 2, "high": 7})


def test_a_category_the_aggregate_does_not_carry_fails_instead_of_counting_zero() -> None:
    # A schema stored before categories and fields were checked against each other (#8): never zeros.
    schema = [
        {"featureName": "blood", "dataType": "NOMINAL", "categories": ["A", "B"], "fields": ["numOfNotNull", "A"]}
    ]
    with pytest.raises(DecodingError, match="no value for category 'B'"):
        decode(schema, [10, 4], clients=2)
