"""The README's settings table, rendered from the declarations (tests/test_settings_table.py keeps them equal)."""

from __future__ import annotations

from orchestrator.settings.declare import Spec, declared
from orchestrator.settings.jobs import (
    COORDINATOR_HOST,
    COORDINATOR_PORT,
    REDIS_HOST,
    REDIS_PORT,
    AggregationSettings,
    DeliverySettings,
    JobSettings,
    RedisSettings,
)
from orchestrator.settings.serving import (
    CLIENT_TOKEN,
    CLIENT_URL,
    HttpSettings,
    LogSettings,
    SecuritySettings,
    WebSocketSettings,
)

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


def _group(cls: type, *inputs: Spec) -> tuple[str, tuple[Spec, ...]]:
    """A group's title (its class's docstring) and its settings, then the variables read only to build them."""
    return (cls.__doc__ or cls.__name__).strip(), (*(spec for _, spec in declared(cls)), *inputs)


# Every variable the service and its CLI read, in the README's order.
GROUPS: tuple[tuple[str, tuple[Spec, ...]], ...] = (
    _group(HttpSettings),
    _group(RedisSettings, REDIS_HOST, REDIS_PORT),
    _group(JobSettings),
    _group(LogSettings),
    _group(WebSocketSettings),
    _group(SecuritySettings),
    _group(AggregationSettings, COORDINATOR_HOST, COORDINATOR_PORT),
    _group(DeliverySettings),
    ("Client commands (`orchestrator watch`, `update`, `submit`)", (CLIENT_URL, CLIENT_TOKEN)),
)


def _variables(spec: Spec) -> str:
    names = ", ".join(f"`{name}`" for name in (spec.env, *((f"{spec.env}_FILE",) if spec.secret else ())))
    return names + "".join(f" (or its former name `{alias}`)" for alias in spec.aliases)


def _default(spec: Spec) -> str:
    if spec.shown_default:
        return spec.shown_default
    if spec.default is None:
        return "none"
    if spec.default in ("", ()):
        return "empty"
    return f"`{spec.parser.text(spec.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table_markdown() -> str:
    """The settings section's tables, one per group, between the markers the README keeps them in."""
    lines = [START, "<!-- Rendered by orchestrator.settings.settings_table_markdown(): edit the declarations. -->"]
    for title, specs in GROUPS:
        lines += ["", f"**{title}**", "", "| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
        lines += [f"| {_variables(s)} | {_cell(_default(s))} | {_cell(s.expected)} | {_cell(s.doc)} |" for s in specs]
    return "\n".join([*lines, "", END])
