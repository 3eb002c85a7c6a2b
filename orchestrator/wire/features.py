"""A job's schema: the features its statistics vector holds, in the detailed form (``featureName``, ``offset``,
``length``, ``fields``) or the short one (``name``, ``dataType``), with what a summed-vector feature declares
(``categories``, ``bounds``, ``scale``). Every rule a schema must keep lives here, once."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from orchestrator.errors import ValidationError
from orchestrator.wire.explain import Refusal, explain, kind, says, short

MAX_SCHEMA_FEATURES = 10_000
MAX_NAME_LENGTH = 256
# The longest statistics vector a schema may describe (offset + length), and the most categories.
MAX_VECTOR = 1_000_000
MAX_SCALE = 12
DATA_TYPES = ("BOOLEAN", "CATEGORICAL", "NOMINAL", "NUMERIC", "ORDINAL")
CATEGORICAL_TYPES = frozenset({"CATEGORICAL", "NOMINAL", "ORDINAL"})
# Field layouts of the short schema form (and of detailed features that name no fields), by data type: the
# real clients' layouts.
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "NUMERIC": ("numOfNotNull", "min", "max", "avg", "q1", "q2", "q3"),
    "BOOLEAN": ("numOfNotNull", "numOfTrue"),
    "NOMINAL": ("numOfNotNull",),
    "ORDINAL": ("numOfNotNull",),
    "CATEGORICAL": ("numOfNotNull",),
}

DataType = Literal["BOOLEAN", "CATEGORICAL", "NOMINAL", "NUMERIC", "ORDINAL"]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
Count = Annotated[int, Meta(ge=0, le=MAX_VECTOR)]
Number = int | float


class Feature(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """One feature of a schema: where its values sit in the statistics vector and what they mean."""

    feature_name: Annotated[Name | None, Meta(description="The feature's name (detailed form).")] = None
    name: Annotated[Name | None, Meta(description="The feature's name (short form), if no featureName.")] = None
    data_type: DataType
    offset: Annotated[Count | None, Meta(description="Where the feature's values start; with length.")] = None
    length: Annotated[Count | None, Meta(description="How many values the feature has; with offset.")] = None
    fields: Annotated[
        list[str] | None,
        Meta(description="The name of each value, distinct; as many as length."),
    ] = None
    categories: Annotated[
        Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1, max_length=MAX_VECTOR)] | None,
        Meta(
            description="A CATEGORICAL, NOMINAL or ORDINAL feature's distinct categories: its values are "
            "numOfNotNull, then one count per category (in fields order when it names fields)."
        ),
    ] = None
    bounds: Annotated[
        tuple[Number, Number] | None,
        Meta(description="[min, max] of a NUMERIC feature's rows, min <= max (a summed-vector job needs them)."),
    ] = None
    scale: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_SCALE)] | None,
        Meta(description="Decimal places of a NUMERIC feature's fixed point (summed-vector jobs), default 0."),
    ] = None

    @property
    def label(self) -> str:
        name = self.feature_name if self.feature_name is not None else self.name
        assert name is not None  # check() refuses a feature without
        return name

    @property
    def size(self) -> int:
        """How many values the feature has, without building anything per value."""
        if self.fields:
            return len(self.fields)
        if self.length is not None:
            return self.length
        if self.categories:
            return 1 + len(self.categories)
        return len(DEFAULT_FIELDS[self.data_type])

    def check(self, where: str) -> None:
        """The rules between this feature's fields."""
        if self.feature_name is None and self.name is None:
            raise _refused(
                where, f"'{where}' needs 'featureName' or 'name': a string of 1-{MAX_NAME_LENGTH} characters"
            )
        if (self.offset is None) != (self.length is None):
            raise _refused(where, f"'{where}' must give 'offset' and 'length' together")
        if self.fields is not None and len(set(self.fields)) != len(self.fields):
            raise _refused(f"{where}.fields", f"'{where}.fields' names a field twice")
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            raise _REFUSALS["categories"](f"{where}.categories", self.categories)
        if self.bounds is not None and not self.bounds[0] <= self.bounds[1]:
            raise _REFUSALS["bounds"](f"{where}.bounds", self.bounds)
        if self.fields is not None and self.length is not None and len(self.fields) != self.length:
            raise _refused(
                f"{where}.fields", f"'{where}.fields' has {len(self.fields)} names but 'length' is {self.length}"
            )
        if self.categories is not None:
            self._check_categories_fit(where)

    def _check_categories_fit(self, where: str) -> None:
        """Declared categories say where each category's count is: the feature's values are ``numOfNotNull``
        and one count per category (in ``fields`` order when the feature names its fields). A layout that
        disagrees would decode as counts of nothing, so it is refused rather than published as zeros."""
        assert self.categories is not None
        at = f"{where}.categories"
        if self.data_type not in CATEGORICAL_TYPES:
            types = ", ".join(sorted(CATEGORICAL_TYPES))
            raise _refused(at, f"'{at}' is for {types} features, not {self.data_type}")
        if "numOfNotNull" in self.categories:
            raise _refused(at, f"'{at}' may not name a category numOfNotNull (the not-null count's field)")
        if self.fields is not None:
            extra = set(self.fields) - set(self.categories) - {"numOfNotNull"}
            known = set(self.fields)
            missing = [c for c in self.categories if c not in known]
            if extra or missing:
                named = ", ".join(repr(f) for f in [*sorted(extra), *missing][:3])
                raise _refused(
                    f"{where}.fields",
                    f"'{where}.fields' must be numOfNotNull and the declared categories, one field each "
                    f"({'unknown' if extra else 'missing'}: {named})",
                )
        expected = len(self.fields) if self.fields is not None else 1 + len(self.categories)
        if self.length is not None and self.length != expected:
            raise _refused(
                f"{where}.length",
                f"'{where}' declares length {self.length}, but its {len(self.categories)} categories take "
                f"{expected} values (numOfNotNull, then one count per category)",
            )


Schema = Annotated[list[Feature], Meta(max_length=MAX_SCHEMA_FEATURES)]


def parse_schema(raw: Any) -> tuple[Feature, ...]:
    """The features of a schema as a client sends it; ValidationError (invalid_schema) naming the first rule
    it breaks."""
    if not isinstance(raw, list):
        raise _refused("schema", f"'schema' must be a list, got {kind(raw)}")
    if len(raw) > MAX_SCHEMA_FEATURES:
        raise _refused("schema", f"'schema' has {len(raw)} features; at most {MAX_SCHEMA_FEATURES} are allowed")
    try:
        features = msgspec.convert(raw, list[Feature])
    except msgspec.ValidationError:
        raise _explain_features(raw) from None
    check_features(features)
    return tuple(features)


def check_features(features: Sequence[Feature]) -> None:
    """The rules of each feature, and between features: distinct names, spans within the vector that do
    not overlap."""
    names: set[str] = set()
    spans: list[tuple[int, int, int]] = []
    for i, feature in enumerate(features):
        where = f"schema[{i}]"
        feature.check(where)
        if feature.label in names:
            raise _refused(where, f"'{where}': duplicate feature name {feature.label!r}")
        names.add(feature.label)
        if feature.offset is not None and feature.length is not None:
            spans.append((feature.offset, feature.length, i))
    for offset, length, i in spans:
        if offset + length > MAX_VECTOR:
            raise _refused(
                f"schema[{i}]",
                f"'schema[{i}]' ends at {offset + length}; a schema may describe at most {MAX_VECTOR} values",
            )
    spans.sort()
    for (off_a, len_a, i_a), (off_b, _, i_b) in itertools.pairwise(spans):
        if off_a + len_a > off_b:
            raise _refused(
                "schema",
                f"'schema[{i_a}]' and 'schema[{i_b}]' overlap (offset {off_a} + length {len_a} > offset {off_b})",
            )


def canonical_schema(raw: list[Any]) -> str:
    """A validated schema as the jobs store and compare it: canonical JSON (sorted keys, compact), with
    whatever else the client's features carry."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "'schema' contains an unpaired surrogate escape", code="invalid_field", field="schema"
        ) from None
    return text


@functools.lru_cache(maxsize=8)
def stored_features(schema_json: str) -> tuple[Feature, ...]:
    """The features of a stored (validated, canonical) schema, read once per job (per process): every client
    of a job sends the same schema, and a schema may list a million categories."""
    try:
        return tuple(msgspec.json.decode(schema_json, type=list[Feature]))
    except msgspec.ValidationError:
        # Stored before the typed model, which reads `name` even beside a featureName: then, a feature's
        # name was its featureName when it had one, whatever `name` held. (A ValueError if still unreadable.)
        features = json.loads(schema_json)
        return tuple(msgspec.convert([_as_stored_before(f) for f in features], list[Feature]))


def _as_stored_before(feature: Any) -> Any:
    if isinstance(feature, dict) and "featureName" in feature:
        return {k: v for k, v in feature.items() if k != "name"}
    return feature


def _explain_features(raw: list[Any]) -> ValidationError:
    for i, item in enumerate(raw):
        where = f"schema[{i}]"
        if not isinstance(item, dict):
            return _refused(where, f"'{where}' must be an object, got {kind(item)}")
        try:
            msgspec.convert(item, Feature)
        except msgspec.ValidationError:
            return explain(item, Feature, _REFUSALS, where)
    return _refused("schema", "'schema' is not valid")


_SCHEMA = "invalid_schema"


def _refused(field: str, message: str) -> ValidationError:
    return ValidationError(message, code=_SCHEMA, field=field)


def _name(path: str, value: Any) -> ValidationError:
    where = path.rpartition(".")[0]
    return _refused(where, f"'{where}' needs 'featureName' or 'name': a string of 1-{MAX_NAME_LENGTH} characters")


def _count(path: str, value: Any) -> ValidationError:
    return _refused(path, f"'{path}' must be a non-negative integer, got {short(value)}")


def _data_type(path: str, value: Any) -> ValidationError:
    return _refused(path, f"'{path}' must be one of {', '.join(DATA_TYPES)}, got {short(value)}")


_REFUSALS: dict[str, Refusal] = {
    "feature_name": _name,
    "name": _name,
    "data_type": _data_type,
    "offset": _count,
    "length": _count,
    "fields": says("'{path}' must be a list of strings", _SCHEMA),
    "categories": says("'{path}' must be a list of distinct non-empty strings", _SCHEMA),
    "bounds": says("'{path}' must be [min, max], two numbers with min <= max", _SCHEMA),
    "scale": says(f"'{{path}}' must be an integer 0-{MAX_SCALE} (decimal places)", _SCHEMA),
}
