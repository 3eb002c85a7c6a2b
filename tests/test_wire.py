"""The typed model of the request bodies (orchestrator/wire/): one place for every rule, refusals mapped to the
codes and messages clients rely on."""

from __future__ import annotations

import json
from typing import Any, get_args

import msgspec
import pytest

from orchestrator.errors import ValidationError
from orchestrator.models import AGGREGATION_BACKENDS
from orchestrator.securesum.layout import VectorLayout
from orchestrator.validation import parse_json_object
from orchestrator.wire import features, refusals
from orchestrator.wire.features import Feature, parse_schema, stored_features
from orchestrator.wire.requests import Backend, CallbackBody, CancelBody, KeyBody, UpdateBody, decode_update

NOW = 1_800_000_000_000
BODY = {"jobId": "j", "clientId": "c", "totalClients": 3}


def refused(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        decode_update(data, now_ms=NOW)
    return caught.value


@pytest.mark.parametrize(
    ("cls", "table"),
    [
        (UpdateBody, refusals.REFUSALS),
        (KeyBody, refusals.KEY_REFUSALS),
        (CancelBody, refusals.REFUSALS),
        (CallbackBody, refusals.REFUSALS),
        (Feature, features._REFUSALS),
    ],
)
def test_every_field_of_the_model_has_its_refusal(cls: type[msgspec.Struct], table: dict[str, Any]) -> None:
    assert {f.name for f in msgspec.structs.fields(cls)} <= set(table)


def test_the_backends_the_model_takes_are_the_service_s() -> None:
    assert set(get_args(Backend)) == AGGREGATION_BACKENDS


def test_a_string_total_takes_seven_digits_like_the_document_says() -> None:
    # The drift #9 found: the document said 6 digits, validation took 7.
    assert decode_update({**BODY, "totalClients": "0000005"}, now_ms=NOW).total_clients == 5
    error = refused({**BODY, "totalClients": "00000005"})
    assert (error.code, error.message) == ("invalid_field", "'totalClients' must be an integer, got string")
    error = refused({**BODY, "totalClients": "0000000"})
    assert error.message == "'totalClients' must be between 1 and 100000, got 0"


def test_the_first_refused_field_is_reported_in_declaration_order() -> None:
    error = refused({"clientId": 5, "totalClients": "x"})
    assert (error.code, error.message, error.details["field"]) == (
        "missing_field",
        "Missing required field 'jobId'",
        "jobId",
    )
    error = refused({**BODY, "clientId": None, "totalClients": 0})
    assert error.details["field"] == "clientId" and error.code == "missing_field"


@pytest.mark.parametrize(
    ("feature", "field", "message"),
    [
        (
            {"name": "c", "dataType": "NOMINAL", "categories": ["a", "b"], "offset": 0, "length": 2},
            "schema[0].length",
            "'schema[0]' declares length 2, but its 2 categories take 3 values (numOfNotNull, then one count per "
            "category)",
        ),
        (
            {"name": "c", "dataType": "BOOLEAN", "offset": 0, "length": 3, "fields": ["numOfNotNull", "t"]},
            "schema[0].fields",
            "'schema[0].fields' has 2 names but 'length' is 3",
        ),
        ({"name": "x", "dataType": "NUMERIC", "bounds": [2, 1]}, "schema[0].bounds", None),
        ({"name": "x", "dataType": "NUMERIC", "scale": 13}, "schema[0].scale", None),
        ({"dataType": "NUMERIC"}, "schema[0]", None),
        ({"name": "x", "dataType": "TEXT"}, "schema[0].dataType", None),
        ({"name": "x", "dataType": "BOOLEAN", "offset": 1}, "schema[0]", None),
    ],
)
def test_cross_field_and_field_rules_of_a_feature(feature: dict[str, Any], field: str, message: str | None) -> None:
    error = refused({**BODY, "schema": [feature]})
    assert (error.code, error.details["field"]) == ("invalid_schema", field)
    if message is not None:
        assert error.message == message


def test_the_layouts_come_from_the_validated_features() -> None:
    schema = [
        {"name": "b", "dataType": "BOOLEAN"},
        {"name": "x", "dataType": "NUMERIC", "bounds": [0, 10], "scale": 1},
        {"name": "c", "dataType": "NOMINAL", "categories": ["p", "q"]},
    ]
    req = decode_update({**BODY, "schema": schema}, now_ms=NOW)
    assert req.schema_json is not None
    typed = stored_features(req.schema_json)
    assert typed == parse_schema(schema)
    layout = VectorLayout.from_features(typed)
    assert [(f.name, f.offset, f.length) for f in layout.features] == [("b", 0, 2), ("x", 2, 3), ("c", 5, 3)]
    assert sum(f.size for f in typed) == 2 + 7 + 3  # the decoder's default fields for a short NUMERIC


def test_the_stored_schema_keeps_what_the_client_sent() -> None:
    schema = [{"name": "b", "dataType": "BOOLEAN", "description": "kept", "unit": None}]
    req = decode_update({**BODY, "schema": schema}, now_ms=NOW)
    assert req.schema_json is not None and json.loads(req.schema_json) == schema


@pytest.mark.parametrize(
    ("body", "code", "start"),
    [
        (b"", "invalid_json", "Request body is empty"),
        (b'{"a": 1', "invalid_json", "Malformed JSON: Expecting"),
        (b'{"a": NaN}', "invalid_json", "Malformed JSON: NaN is not a JSON value"),
        (b'{"a": 1e400}', "invalid_json", "Malformed JSON: the number 1e400 is beyond the range of a double"),
        (b"[1]", "invalid_body", "Request body must be a JSON object, got array"),
        (b"\xff", "invalid_json", "Request body is not valid UTF-8"),
    ],
)
def test_bodies_that_are_no_json_object_say_why(body: bytes, code: str, start: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_json_object(body)
    assert caught.value.code == code and caught.value.message.startswith(start), caught.value.message


def test_a_lone_surrogate_is_refused_where_it_would_be_stored() -> None:
    data = parse_json_object(
        b'{"jobId": "j", "clientId": "c", "totalClients": 2, "schema": [{"name": "\\ud800", "dataType": "BOOLEAN"}]}'
    )
    error = refused(data)
    assert (error.code, error.details["field"]) == ("invalid_field", "schema")


def test_a_schema_stored_before_the_model_still_reads() -> None:
    # The old validation read featureName when a feature had one and never looked at 'name'.
    stored = json.dumps([{"featureName": "a", "name": 5, "dataType": "BOOLEAN"}], sort_keys=True)
    (feature,) = stored_features(stored)
    assert (feature.label, feature.size) == ("a", 2)
