from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orchestrator.models import iso_ms


@pytest.mark.parametrize("ms", [0, 999, 1000, 1795918146664, 1795918146000, 1795918146999, 4102444799999])
def test_iso_ms_matches_datetime(ms: int) -> None:
    expected = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    assert iso_ms(ms) == expected
    assert iso_ms(ms) == iso_ms(ms)  # from the per-second cache, the same


def test_iso_ms_none() -> None:
    assert iso_ms(None) is None


def test_stored_json_is_spliced_into_a_response_as_it_is() -> None:
    from orchestrator.serializers import RawJSON, dumps

    stored = '[{"categories":["A","B"],"dataType":"NOMINAL","name":"b"}]'
    text = dumps({"schema": RawJSON(stored), "name": "@raw:0@", "other": [RawJSON("1"), None]})
    assert json.loads(text) == {"schema": json.loads(stored), "name": "@raw:0@", "other": [1, None]}
    assert stored in text
