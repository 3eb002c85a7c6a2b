"""A setting is declared once, as a dataclass field whose metadata is its `Spec`; reading it follows from that.

The Spec names the variable, its default, bounds or choices and a one-line doc, and says whether it is a
secret (hidden from the start-up log, also read from `NAME_FILE`). Reading the environment, the
`NAME: must be ..., got ...` errors, the public dump and the README table are all derived from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_KEY = "setting"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# A host name as the Host header carries it, without a port: a DNS name (a leading dot: it and its
# subdomains), an IPv4 address or a bracketed IPv6 one.
_HOST_NAME = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\]")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names it."""


def _number(value: float) -> str:
    """A bound or default as a person writes it: 3600, not 3600.0; 0.01, not 1e-02."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _joined(value: tuple[str, ...]) -> str:
    return ",".join(value)


def _shown(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Parser:
    """One kind of value: how its variable's text becomes it, what an error says it must be, how it is shown."""

    convert: Callable[[str], Any]
    # What the value must be; numeric parsers leave it to the Spec's unit and bounds.
    expected: str = ""
    # The unit numeric bounds are stated in ("an integer 1-10", "seconds, 1-10").
    unit: str = ""
    # The value written as its variable (the README's default column).
    text: Callable[[Any], str] = str
    # The value in the start-up log.
    show: Callable[[Any], Any] = _shown


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


def _formats(raw: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in raw.split(",") if f.strip()))
    if not formats or any(f not in ("json", "txt") for f in formats):
        raise ValueError(raw)
    return formats


def _headers(raw: str) -> tuple[tuple[str, str], ...]:
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(raw)
    return tuple(data.items())


def _items(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.rstrip("/") for o in _items(raw))
    for origin in origins:
        if origin != "*" and urlsplit(origin).scheme not in {"http", "https"}:
            raise ValueError(origin)
    return origins


def _hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(h.lower() for h in _items(raw))
    for host in hosts:
        if host != "*" and not _HOST_NAME.fullmatch(host):
            raise ValueError(host)
    return hosts


def without_credentials(url: str | None) -> str | None:
    """A URL for logs: scheme, host, port and path, without a user or password."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


TEXT = Parser(lambda raw: raw, "text")
INTEGER = Parser(int, unit="an integer")
SECONDS = Parser(float, unit="seconds", text=_number)
BOOL = Parser(_bool, "true or false", text=lambda v: "true" if v else "false")
UPPER = Parser(lambda raw: raw.strip().upper())
# Checked by the settings' rules (for overrides too), so a URL's error shows it as it is kept.
URL = Parser(lambda raw: raw, "an http:// or https:// URL", show=without_credentials)
BASE_URL = Parser(lambda raw: raw.rstrip("/") or None, URL.expected, show=without_credentials)
# The value is the file's content (the Spec says from_file); the log says only whether there is one.
PEM_FILE = Parser(lambda raw: raw, "a file with a PEM public key", show=lambda v: None if v is None else "loaded")
LIST = Parser(_items, "a comma-separated list", text=_joined)
ORIGINS = Parser(_origins, "comma-separated http(s) origins, or *", text=_joined)
HOSTS = Parser(
    _hosts, "comma-separated host names (example.org, or .example.org for it and its subdomains), or *", text=_joined
)
FORMATS = Parser(_formats, "json, txt or json,txt", text=_joined)
HEADERS = Parser(
    _headers,
    'a JSON object of header names to values, e.g. {"X-Tenant": "a"}',
    text=lambda v: json.dumps(dict(v)),
)


@dataclass(frozen=True)
class Spec:
    """Everything about one setting, written once."""

    env: str
    default: Any
    doc: str
    parser: Parser
    unit: str = ""
    low: float | None = None
    high: float | None = None
    # The low bound itself is refused (a timeout of 0 s).
    above: bool = False
    choices: frozenset[str] = frozenset()
    # Appended to the error's range: what a special value means ("0: off").
    note: str = ""
    # What the error says the value must be, in place of the derived text: the words it said before the
    # declarations, where they differ from the derivation ("an integer 1-10^12").
    wording: str = ""
    # Never logged or shown; NAME_FILE, when set, names a file holding the value (and wins).
    secret: bool = False
    # The variable names a file and the value is that file's content, as it is.
    from_file: bool = False
    # Former names, still read when the variable is not set.
    aliases: tuple[str, ...] = ()
    # An empty variable is the value (not the default).
    blank_is_value: bool = False
    # The README's default when it is not the field's (it depends on another setting).
    shown_default: str = ""

    @property
    def expected(self) -> str:
        """What an error says the value must be."""
        if self.wording:
            return self.wording
        if self.choices:
            return "one of " + ", ".join(sorted(self.choices))
        if self.parser.expected:
            return self.parser.expected
        unit = self.unit or self.parser.unit
        text = unit + (" " if unit.startswith(("a ", "an ")) else ", ")
        if self.high is None:
            text += f">= {_number(self.low or 0)}"
        else:
            text += f"{_number(self.low or 0)}-{_number(self.high)}"
        return f"{text} ({self.note})" if self.note else text

    def accepts(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.low is not None and not (value > self.low if self.above else value >= self.low):
            return False
        return self.high is None or value <= self.high

    @property
    def names(self) -> tuple[str, ...]:
        """Every variable it is read from, the main one first."""
        return (self.env, *((f"{self.env}_FILE",) if self.secret else ()), *self.aliases)


def option(env: str, default: Any, doc: str, *, parser: Parser | None = None, **options: Any) -> Spec:
    """A Spec; its parser follows from the default's type unless given."""
    if parser is None:
        parser = {bool: BOOL, int: INTEGER, float: SECONDS, str: TEXT, type(None): TEXT}[type(default)]
    return Spec(env, default, doc, parser, **options)


def setting(env: str, default: T, doc: str, *, parser: Parser | None = None, **options: Any) -> T:
    """A dataclass field declared with its Spec (see `option`); secrets stay out of repr()."""
    spec = option(env, default, doc, parser=parser, **options)
    return field(default=default, repr=not spec.secret, metadata={_KEY: spec})


def declared(cls: type) -> Iterator[tuple[str, Spec]]:
    """(attribute, Spec) of every declared field of a settings dataclass, in field order."""
    for f in fields(cls):
        if _KEY in f.metadata:
            yield f.name, f.metadata[_KEY]


def spec_of(cls: type, attribute: str) -> Spec:
    return dict(declared(cls))[attribute]


def read(spec: Spec, env: Mapping[str, str]) -> Any:
    """The setting's value in env (its default when unset or empty); SettingsError names a bad one."""
    name, raw = _raw(spec, env)
    if raw is None:
        return spec.default
    if spec.from_file:
        return _contents(name, raw)
    try:
        value = spec.parser.convert(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be {spec.expected}, got {raw!r}") from None
    if not spec.accepts(value):
        raise SettingsError(f"{name}: must be {spec.expected}, got {raw!r}")
    return value


def _raw(spec: Spec, env: Mapping[str, str]) -> tuple[str, str | None]:
    """The variable that gives the value and its text, None when none does."""
    if spec.secret and (path := env.get(f"{spec.env}_FILE")):
        return f"{spec.env}_FILE", _contents(f"{spec.env}_FILE", path).rstrip("\r\n") or None
    for name in (spec.env, *spec.aliases):
        raw = env.get(name)
        if raw or (raw is not None and spec.blank_is_value):
            return name, raw
    return spec.env, None


def _contents(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as e:
        raise SettingsError(f"{name}: cannot read {path}: {e.strerror}") from None
