"""From a msgspec refusal to the error clients rely on: the first field (in the Struct's declaration order)
whose value its type refuses, reported with that field's own code and message."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from orchestrator.errors import ValidationError

# What a field's refusal says: its path (e.g. "schema[2].bounds") and the value sent (MISSING if none).
Refusal = Callable[[str, Any], ValidationError]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
T = TypeVar("T")


def convert(data: Mapping[str, Any], cls: type[T], refusals: Mapping[str, Refusal], where: str = "") -> T:
    """``data`` as a ``cls``, or the ValidationError of its first refused field."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError:
        raise explain(data, cls, refusals, where) from None


def explain(data: Mapping[str, Any], cls: type[Any], refusals: Mapping[str, Refusal], where: str) -> ValidationError:
    for info in msgspec.structs.fields(cls):
        value = data.get(info.encode_name, MISSING)
        if value is MISSING and not info.required:
            continue
        if value is not MISSING and _accepts(info.type, value):
            continue
        path = f"{where}.{info.encode_name}" if where else info.encode_name
        return refusals[info.name](path, value)
    # Not a field of ours: msgspec refused something the table does not know (a bug, but a 400, not a 500).
    return ValidationError(f"'{where or 'body'}' is not valid", code="invalid_request", field=where or None)


def _accepts(annotation: Any, value: Any) -> bool:
    try:
        msgspec.convert(value, annotation)
    except msgspec.ValidationError:
        return False
    return True


def kind(value: Any) -> str:
    """The JSON kind of ``value``, as messages name it."""
    if value is None or value is MISSING:
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


def short(value: Any) -> str:
    """``value`` as a message quotes it: at most 40 characters, containers by their kind."""
    if value is MISSING:
        return "null"
    if isinstance(value, (list, dict)):
        return kind(value)
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def says(template: str, code: str = "invalid_field") -> Refusal:
    """A refusal that says ``template`` with the field's ``{path}`` and the ``{value}`` sent."""
    return lambda path, value: ValidationError(template.format(path=path, value=short(value)), code=code, field=path)
