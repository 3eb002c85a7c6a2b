"""Lua scripts called by name: a script's KEYS and ARGV are declared once (orchestrator.scripts), and both
the Lua that reads them and every call that passes them are built from that declaration.

A script is a body file of this package (``<name>.lua``) and the shared functions it uses (``lib/*.lua``).
Loading it prepends a generated prelude that names its arguments::

    local CONFIG = {ttl = 604800000, channel = "\\101..."}   -- deployment constants, fixed at load
    local K = {job = KEYS[1], clients = KEYS[2], indexes = {unpack(KEYS, 3)}}
    local A = {job_id = ARGV[1], now_ms = ARGV[2]}

so a body reads ``K.job`` and ``A.job_id``, never ``KEYS[1]``. A call passes two mappings (``keys=``,
``args=``) with exactly the declared names: a missing or unknown name is a ScriptArgumentError before
anything is sent. tests/test_scripts_declared.py checks every body against its declaration.

A declared name ending in ``?`` may be passed as None to leave it out (only at the end of its list: the
positions after it would shift); one ending in ``*`` takes a list and gets the rest of the positions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

Value = str | int
Kind = Literal["one", "optional", "rest"]
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class ScriptArgumentError(TypeError):
    """A call passed a name its script does not declare, or left a declared one out."""


@cache
def lua_text(path: str) -> str:
    """A Lua file of this package (``update.lua``, ``lib/emit.lua``)."""
    return files(__name__).joinpath(*path.split("/")).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    doc: str

    @classmethod
    def parse(cls, declared: str, doc: str) -> Param:
        kind: Kind = "rest" if declared.endswith("*") else "optional" if declared.endswith("?") else "one"
        name = declared.rstrip("*?")
        if not _NAME.match(name):
            raise ValueError(f"a script argument's name must be a Lua identifier in snake case, not {declared!r}")
        return cls(name, kind, doc)


@dataclass(frozen=True)
class Positions:
    """The declared names of a script's KEYS or ARGV, in order, and how a call's mapping becomes the list."""

    where: str
    params: tuple[Param, ...]
    names: frozenset[str]
    fixed: tuple[str, ...]  # the leading plain names (the fast path of flatten)
    tail: tuple[Param, ...]

    @classmethod
    def declare(cls, declared: Mapping[str, str], where: str) -> Positions:
        params = tuple(Param.parse(name, doc) for name, doc in declared.items())
        kinds = [p.kind for p in params]
        if "rest" in kinds and kinds.index("rest") != len(kinds) - 1:
            raise ValueError(f"{where}: only the last argument may take the rest")
        if "optional" in kinds and any(k == "one" for k in kinds[kinds.index("optional") :]):
            raise ValueError(f"{where}: optional arguments come last")
        plain = (
            kinds.index("optional") if "optional" in kinds else kinds.index("rest") if "rest" in kinds else len(kinds)
        )
        names = frozenset(p.name for p in params)
        return cls(where, params, names, tuple(p.name for p in params[:plain]), params[plain:])

    def flatten(self, given: Mapping[str, Any]) -> list[Any]:
        if given.keys() != self.names:
            missing, unknown = sorted(self.names - given.keys()), sorted(given.keys() - self.names)
            raise ScriptArgumentError(f"{self.where}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}")
        values = [given[name] for name in self.fixed]
        left_out = ""
        for p in self.tail:
            value = given[p.name]
            if p.kind == "rest":
                values.extend(value)
            elif value is None:
                left_out = left_out or p.name
            elif left_out:
                raise ScriptArgumentError(f"{self.where}: {p.name} given after {left_out} was left out")
            else:
                values.append(value)
        return values

    def prelude(self, table: str, source: str) -> str:
        """``local K = {job = KEYS[1], ...}``: each name bound to its position (a rest: a table of them)."""
        members = []
        for position, p in enumerate(self.params, start=1):
            value = f"{{unpack({source}, {position})}}" if p.kind == "rest" else f"{source}[{position}]"
            members.append(f"{p.name} = {value}")
        return f"local {table} = {{{', '.join(members)}}}\n"


def lua_literal(value: Value) -> str:
    """A constant as Lua source: an integer, or a string in decimal escapes (any bytes, nothing to quote)."""
    if isinstance(value, str):
        return '"' + "".join(f"\\{byte}" for byte in value.encode()) + '"'
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a script constant is an integer or a string, not {value!r}")
    return str(value)


@dataclass(frozen=True)
class Script:
    """One Lua script: its body file (``<name>.lua``), the shared functions it uses (``lib/<use>.lua``), and
    its arguments by name, each with what it is: ``keys`` the KEYS, ``argv`` the ARGV, ``config`` the
    constants fixed when it is loaded; ``returns`` what it answers."""

    name: str
    keys: Mapping[str, str]
    argv: Mapping[str, str]
    returns: str
    uses: tuple[str, ...] = ()
    config: Mapping[str, str] = field(default_factory=dict)
    key_positions: Positions = field(init=False, repr=False)
    arg_positions: Positions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_positions", Positions.declare(self.keys, f"{self.name} KEYS"))
        object.__setattr__(self, "arg_positions", Positions.declare(self.argv, f"{self.name} ARGV"))
        if not all(_NAME.match(name) for name in self.config):
            raise ValueError(f"{self.name}: a constant's name must be a Lua identifier in snake case")

    @property
    def key_params(self) -> tuple[Param, ...]:
        return self.key_positions.params

    @property
    def arg_params(self) -> tuple[Param, ...]:
        return self.arg_positions.params

    @property
    def file(self) -> str:
        return f"{self.name}.lua"

    @property
    def body(self) -> str:
        """The Lua that runs, without the prelude: the shared functions it uses, then its own."""
        return "".join(lua_text(f"lib/{piece}.lua") for piece in self.uses) + lua_text(self.file)

    def prelude(self, config: Mapping[str, Value] | None = None) -> str:
        """The generated Lua that names the arguments (and sets the constants)."""
        constants = dict(config or {})
        if constants.keys() != self.config.keys():
            raise ScriptArgumentError(f"{self.name} constants: expected {sorted(self.config)}, got {sorted(constants)}")
        text = ""
        if constants:
            members = ", ".join(f"{name} = {lua_literal(constants[name])}" for name in self.config)
            text = f"local CONFIG = {{{members}}}\n"
        return text + self.key_positions.prelude("K", "KEYS") + self.arg_positions.prelude("A", "ARGV")

    def source(self, config: Mapping[str, Value] | None = None) -> str:
        """What is sent to Redis (SCRIPT LOAD, EVALSHA)."""
        return self.prelude(config) + self.body

    def build(self, keys: Mapping[str, Any], args: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        """The KEYS and ARGV of a call, in the declared order."""
        return self.key_positions.flatten(keys), self.arg_positions.flatten(args)

    def register(self, redis: aioredis.Redis, config: Mapping[str, Value] | None = None) -> LoadedScript:
        """The script bound to a client (EVALSHA, loading it on NOSCRIPT), with ``config`` built in."""
        return LoadedScript(self, redis.register_script(self.source(config)))


class LoadedScript:
    """A script registered on a client; calling it runs it once (one EVALSHA)."""

    def __init__(self, script: Script, registered: AsyncScript) -> None:
        self.script = script
        self._registered = registered

    async def __call__(self, *, keys: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
        flat_keys, flat_args = self.script.build(keys, args)
        return await self._registered(keys=flat_keys, args=flat_args)


def used_names(text: str, table: str) -> set[str]:
    """The members of ``table`` (K, A, CONFIG) a Lua text reads."""
    return set(re.findall(rf"(?<![\w.]){table}\.([A-Za-z_]\w*)", text))


def declared_files(scripts: Iterable[Script]) -> set[str]:
    """Every Lua file the scripts are made of."""
    return {s.file for s in scripts} | {f"lib/{piece}.lua" for s in scripts for piece in s.uses}
