"""The secure sum without the service: vector layout, fixed point, overflow checks, masks, and the
property that the decoded sum of masked vectors equals the plaintext statistics."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.securesum.layout import LayoutError, OverflowRisk, RowError, VectorLayout
from orchestrator.securesum.masking import (
    InvalidPublicKey,
    encode_key,
    generate_private_key,
    mask_vector,
    pair_seed,
    parse_public_key,
    public_key_bytes,
)
from orchestrator.securesum.statistics import InconsistentAggregate

SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]


def secure_sum(job_id: str, vectors: dict[str, np.ndarray]) -> np.ndarray:
    """Every client masks its vector against all the others; the masked vectors are summed mod 2**64."""
    private = {client: generate_private_key() for client in vectors}
    public = {client: public_key_bytes(key) for client, key in private.items()}
    total = np.zeros(next(iter(vectors.values())).size, dtype="<u8")
    for client, values in vectors.items():
        masked = mask_vector(
            values, job_id=job_id, instance_id="i1", client_id=client, private_key=private[client], public_keys=public
        )
        if len(vectors) > 1:
            assert not np.array_equal(masked.view("<i8"), values), "a masked vector must not be the plain one"
        total += masked
    return total.view("<i8")


def test_layout_of_each_type() -> None:
    layout = VectorLayout.from_schema(SCHEMA)
    assert layout.length == 3 + 2 + 4
    assert [(f.name, f.offset, f.length) for f in layout.features] == [("age", 0, 3), ("smoker", 3, 2), ("blood", 5, 4)]


def test_encode_counts_nulls_booleans_categories_and_fixed_point() -> None:
    layout = VectorLayout.from_schema(SCHEMA)
    rows: list[dict[str, Any]] = [
        {"age": 30.25, "smoker": True, "blood": "A"},
        {"age": "40.1", "smoker": "no", "blood": "O"},
        {"age": None, "smoker": None, "blood": ""},
        {"smoker": 1},
    ]
    # 30.25 rounds half to even at one decimal: 302; 40.1 -> 401.
    assert layout.encode(rows).tolist() == [2, 302 + 401, 302**2 + 401**2, 3, 2, 2, 1, 0, 1]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"age": 121}, "outside the declared bounds"),
        ({"age": -0.5}, "outside the declared bounds"),
        ({"age": "old"}, "not a finite number"),
        ({"age": float("nan")}, "not a finite number"),
        ({"age": True}, "not a finite number"),
        ({"smoker": "maybe"}, "not a boolean"),
        ({"smoker": 2}, "not a boolean"),
        ({"blood": "AB"}, "not one of its declared categories"),
    ],
)
def test_rows_that_do_not_fit_are_refused_not_clipped(row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowError, match=message):
        VectorLayout.from_schema(SCHEMA).encode([row])


def test_more_rows_than_max_rows_are_refused() -> None:
    with pytest.raises(RowError, match="maxRows=2"):
        VectorLayout.from_schema(SCHEMA).encode([{}, {}, {}], max_rows=2)


@pytest.mark.parametrize(
    ("feature", "field"),
    [
        ({"name": "x", "dataType": "NUMERIC"}, "schema[0].bounds"),
        ({"name": "x", "dataType": "NUMERIC", "bounds": [5, 1]}, "schema[0].bounds"),
        ({"name": "x", "dataType": "NUMERIC", "bounds": [0, float("inf")]}, "schema[0].bounds"),
        ({"name": "x", "dataType": "NUMERIC", "bounds": [0, 1], "scale": 13}, "schema[0].scale"),
        ({"name": "x", "dataType": "NUMERIC", "bounds": [0, 1], "scale": 1.5}, "schema[0].scale"),
        ({"name": "x", "dataType": "NOMINAL"}, "schema[0].categories"),
        ({"name": "x", "dataType": "ORDINAL", "categories": ["a", "a"]}, "schema[0].categories"),
        ({"name": "x", "dataType": "BOOLEAN", "offset": 0, "length": 7}, "schema[0]"),
    ],
)
def test_schemas_without_a_vector_layout_are_refused(feature: dict[str, Any], field: str) -> None:
    with pytest.raises(LayoutError) as caught:
        VectorLayout.from_schema([feature])
    assert caught.value.field == field


def test_capacity_refuses_what_could_overflow_int64() -> None:
    layout = VectorLayout.from_schema([{"name": "x", "dataType": "NUMERIC", "bounds": [-1e6, 1e6], "scale": 3}])
    # |value| up to 1e9 in fixed point: squares up to 1e18, so at most 9 rows in all.
    layout.check_capacity(3, 3)
    with pytest.raises(OverflowRisk, match="at most 3 rows per client"):
        layout.check_capacity(3, 4)
    with pytest.raises(OverflowRisk, match="cannot be counted"):
        VectorLayout.from_schema([{"name": "b", "dataType": "BOOLEAN"}]).check_capacity(2**32, 2**32)


def test_the_largest_allowed_sums_do_not_wrap() -> None:
    layout = VectorLayout.from_schema([{"name": "x", "dataType": "NUMERIC", "bounds": [-1e6, 1e6], "scale": 3}])
    layout.check_capacity(3, 3)
    vectors = {f"c{i}": layout.encode([{"x": -1e6}, {"x": 1e6}, {"x": 1e6}]) for i in range(3)}
    (decoded,) = layout.decode(secure_sum("edge", vectors), clients=3)
    assert (decoded["count"], decoded["sum"]) == (9, 3e6)
    assert decoded["variance"] == pytest.approx(float(Fraction(9 * 9 * 10**18 - (3 * 10**9) ** 2, 72)) / 1e6)


def test_masks_cancel_and_hide_each_vector() -> None:
    layout = VectorLayout.from_schema(SCHEMA)
    vectors = {f"c{i}": layout.encode([{"age": 20 + i, "smoker": i % 2 == 0, "blood": "B"}]) for i in range(4)}
    total = secure_sum("job-1", vectors)
    assert total.tolist() == np.sum(list(vectors.values()), axis=0).tolist()


def test_pair_seeds_agree_and_are_bound_to_the_job_instance_and_pair() -> None:
    a, b, c = generate_private_key(), generate_private_key(), generate_private_key()
    pa, pb, pc = (public_key_bytes(k) for k in (a, b, c))
    seed = pair_seed(a, "job", "A", "B", pb, instance_id="i1")
    assert seed == pair_seed(b, "job", "B", "A", pa, instance_id="i1")
    assert seed != pair_seed(a, "other-job", "A", "B", pb, instance_id="i1")
    assert seed != pair_seed(a, "job", "A", "C", pc, instance_id="i1")
    # The same jobId and keys in another instance (the jobId used again after expiry): other masks.
    assert seed != pair_seed(a, "job", "A", "B", pb, instance_id="i2")
    # Same key material, swapped ids: another seed (ids are bound, not only keys).
    assert seed != pair_seed(a, "job", "B", "A", pb, instance_id="i1")
    with pytest.raises(ValueError, match="instance"):
        pair_seed(a, "job", "A", "B", pb, instance_id="")


def test_public_keys_are_checked() -> None:
    key = encode_key(public_key_bytes(generate_private_key()))
    assert len(parse_public_key(key)) == 32
    for bad, reason in [
        ("not base64!", "base64"),
        (encode_key(b"\x01" * 31), "31 bytes"),
        (encode_key(bytes(32)), "low-order"),
        (encode_key((1).to_bytes(32, "little")), "low-order"),
        (encode_key((2**255 - 19).to_bytes(32, "little")), "canonical"),
        (encode_key((2**255 - 1).to_bytes(32, "little")), "canonical"),
        (encode_key(bytes(base64_key_with_top_bit())), "canonical"),
    ]:
        with pytest.raises(InvalidPublicKey, match=reason):
            parse_public_key(bad)


def base64_key_with_top_bit() -> bytes:
    raw = bytearray(public_key_bytes(generate_private_key()))
    raw[31] |= 0x80  # the same point to X25519, another spelling
    return bytes(raw)


def test_an_inconsistent_sum_is_refused() -> None:
    layout = VectorLayout.from_schema(SCHEMA)
    generator = np.random.default_rng(7)
    # A client that masked with other keys makes the sum uniformly random: caught, every time here.
    for _ in range(200):
        garbage = generator.integers(-(2**63), 2**63 - 1, size=layout.length, dtype=np.int64, endpoint=True)
        with pytest.raises(InconsistentAggregate, match="honest"):
            layout.decode(garbage, clients=3, max_rows=1000)
    cases = [
        [3001, 0, 0, 0, 0, 0, 0, 0, 0],  # more rows than 3 clients x 1000
        [0, 5, 25, 0, 0, 0, 0, 0, 0],  # no values, yet a sum
        [2, 2500, 2500**2 * 2, 0, 0, 0, 0, 0, 0],  # a mean above the bound (120.0 at scale 1: 1200)
        [2, 10, 10, 0, 0, 0, 0, 0, 0],  # squares below sum^2 / count
        [0, 0, 0, 2, 3, 0, 0, 0, 0],  # more true than not-null
        [0, 0, 0, 0, 0, 2, 1, 0, 0],  # category counts not adding up
    ]
    for values in cases:
        with pytest.raises(InconsistentAggregate):
            layout.decode(np.array(values, dtype=np.int64), clients=3, max_rows=1000)


def test_csv_rows_need_every_column(tmp_path: Any) -> None:
    from orchestrator.securesum.participant import local_statistics

    path = tmp_path / "rows.csv"
    path.write_text("age,smoker,bloood\n30,true,A\n")
    with pytest.raises(RowError, match="no column for blood"):
        local_statistics(SCHEMA, path, 2, 10)
    path.write_text("age,smoker,blood\n30,true,A\n,,\n")
    assert local_statistics(SCHEMA, path, 2, 10).tolist() == [1, 300, 90000, 1, 1, 1, 1, 0, 0]


# --- the property: decoded secure sum == plaintext statistics --------------------------------------------

CATEGORIES = ["a", "b", "c", "d"]


@st.composite
def schemas(draw: st.DrawFn) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["NUMERIC", "BOOLEAN", "NOMINAL", "ORDINAL", "CATEGORICAL"]))
        feature: dict[str, Any] = {"name": f"f{i}", "dataType": kind}
        if kind == "NUMERIC":
            low = draw(st.integers(-1000, 1000))
            feature["bounds"] = [low, low + draw(st.integers(0, 2000))]
            feature["scale"] = draw(st.integers(0, 3))
        elif kind != "BOOLEAN":
            feature["categories"] = CATEGORIES[: draw(st.integers(1, 4))]
        features.append(feature)
    return features


def value_for(feature: dict[str, Any]) -> st.SearchStrategy[Any]:
    if feature["dataType"] == "BOOLEAN":
        return st.one_of(st.none(), st.booleans())
    if feature["dataType"] != "NUMERIC":
        return st.one_of(st.none(), st.sampled_from(feature["categories"]))
    low, high = feature["bounds"]
    integers = st.integers(low, high)
    exact = st.decimals(low, high, places=feature["scale"]).map(str)  # exact at the declared scale
    finer = st.floats(low, high, allow_nan=False)  # rounded to the scale: within its precision
    return st.one_of(st.none(), integers, exact, finer)


@st.composite
def jobs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    schema = draw(schemas())
    row = st.fixed_dictionaries({f["name"]: value_for(f) for f in schema})
    clients = draw(st.lists(st.lists(row, max_size=12), min_size=2, max_size=20))
    return schema, clients


def plaintext(schema: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statistics computed directly from all the rows, independently of the layout code."""
    expected = []
    for feature in schema:
        values = [r[feature["name"]] for r in rows if r[feature["name"]] is not None]
        if feature["dataType"] == "NUMERIC":
            exact = [Fraction(Decimal(str(v))) for v in values]
            rounded = any(isinstance(v, float) and Fraction(v) * 10 ** feature["scale"] % 1 for v in values)
            n = len(exact)
            mean = sum(exact, Fraction(0)) / n if n else None
            variance = None
            if mean is not None and n > 1:
                variance = sum(((x - mean) ** 2 for x in exact), Fraction(0)) / (n - 1)
            expected.append(
                {"count": n, "sum": sum(exact, Fraction(0)), "mean": mean, "variance": variance, "rounded": rounded}
            )
        elif feature["dataType"] == "BOOLEAN":
            expected.append({"aggregatedNotNull": len(values), "aggregatedTrue": sum(values)})
        else:
            counts = {c: values.count(c) for c in feature["categories"]}
            expected.append({"aggregatedNotNull": len(values), "categoryCounts": counts})
    return expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(jobs())
def test_decoded_secure_sum_equals_plaintext_statistics(
    job: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]],
) -> None:
    schema, clients = job
    layout = VectorLayout.from_schema(schema)
    layout.check_capacity(len(clients), 12)
    vectors = {f"client-{i:02d}": layout.encode(rows, max_rows=12) for i, rows in enumerate(clients)}
    decoded = layout.decode(secure_sum("property", vectors), clients=len(clients), max_rows=12)
    truth = plaintext(schema, [r for rows in clients for r in rows])
    for feature, got, want in zip(schema, decoded, truth, strict=True):
        if feature["dataType"] != "NUMERIC":
            assert {k: got[k] for k in want} == want
            continue
        assert got["count"] == want["count"]
        if want["rounded"]:
            # Values finer than the scale were rounded: each by at most half a unit of the last decimal.
            half = Fraction(1, 2 * 10 ** feature["scale"])
            assert abs(Fraction(got["sum"]) - want["sum"]) <= want["count"] * half + Fraction(1, 10**9)
            if want["mean"] is not None:
                assert abs(Fraction(got["mean"]) - want["mean"]) <= half + Fraction(1, 10**9)
            continue
        if feature["scale"] == 0:
            assert got["sum"] == want["sum"]  # exact: an int
            assert isinstance(got["sum"], int)
        else:
            assert got["sum"] == pytest.approx(float(want["sum"]), rel=1e-12, abs=1e-9)
        for name in ("mean", "variance"):
            if want[name] is None:
                assert got[name] is None
            else:
                assert got[name] == pytest.approx(float(want[name]), rel=1e-9, abs=1e-9)
        if want["variance"] is not None:
            assert got["std"] == pytest.approx(math.sqrt(float(want["variance"])), rel=1e-9, abs=1e-9)
