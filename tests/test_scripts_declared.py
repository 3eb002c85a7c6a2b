"""Each Lua script against its declaration (orchestrator.scripts): the names its body reads are the names
declared, no body reads KEYS or ARGV by position, every call is checked by name, and every script compiles
on fakeredis and on the real Redis."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
import redis.asyncio as aioredis

from orchestrator import scripts
from orchestrator.lua import Script, ScriptArgumentError, declared_files, lua_text, used_names
from orchestrator.settings import Settings
from orchestrator.store import script_constants

CONSTANTS = script_constants(Settings(key_prefix='t:"\\x\n'))


def constants(script: Script) -> dict[str, str | int]:
    return {name: CONSTANTS[name] for name in script.config}


def without_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


# The keys a shared piece reads through the table a body passes it (lib/rounds.lua: ``ctx.keys``).
LIB_KEYS = {"rounds": set(scripts.ROUND_KEYS)}


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_the_body_reads_exactly_the_declared_names(script: Script) -> None:
    body = without_comments(lua_text(script.file))
    through_libs = set().union(*(LIB_KEYS.get(piece, set()) for piece in script.uses))
    assert used_names(body, "K") | through_libs == {p.name for p in script.key_params}
    # A body that hands its arguments to lib/rounds.lua's change_context reads scripts.CHANGE's through it.
    through_context = set(scripts.CHANGE) if "change_context(K, A)" in body else set()
    assert used_names(body, "A") | through_context == {p.name for p in script.arg_params}
    assert used_names(body, "CONFIG") == set(script.config)
    assert not re.search(r"\b(KEYS|ARGV)\b", script.body), "a body reads KEYS or ARGV by position"


@pytest.mark.parametrize("piece", sorted({u for s in scripts.ALL for u in s.uses}))
def test_shared_functions_take_everything_as_parameters(piece: str) -> None:
    text = without_comments(lua_text(f"lib/{piece}.lua"))
    assert not re.search(r"\b(KEYS|ARGV|K|A|CONFIG)\b", text)
    assert re.findall(r"^local function (\w+)", text, re.M), "a shared piece declares local functions only"


def test_every_lua_file_belongs_to_a_script() -> None:
    package = files("orchestrator.lua")
    present = {p.name for p in package.iterdir() if p.name.endswith(".lua")}
    present |= {f"lib/{p.name}" for p in package.joinpath("lib").iterdir() if p.name.endswith(".lua")}
    assert present == declared_files(scripts.ALL)
    assert len({s.name for s in scripts.ALL}) == len(scripts.ALL)


def test_the_prelude_names_every_position() -> None:
    prelude = scripts.EXPIRE.prelude()
    assert "local K = {job = KEYS[1], clients = KEYS[2]" in prelude
    assert "indexes = {unpack(KEYS, 13)}" in prelude
    assert "local A = {job_id = ARGV[1], cutoff = ARGV[2]" in prelude
    assert scripts.UPDATE.prelude(constants(scripts.UPDATE)).startswith("local CONFIG = {ttl = ")


def test_a_call_is_built_by_name() -> None:
    keys, args = scripts.RATE_LIMIT.build({"counters": ["a", "b"]}, {"window": 10, "limits": [1, 2]})
    assert (keys, args) == (["a", "b"], [10, 1, 2])
    job = {name: name for name in scripts.ROUND_KEYS} | {"created": "c", "tomb": "t"}
    argv = {p.name: p.name for p in scripts.REGISTER_KEY.arg_params}
    assert scripts.REGISTER_KEY.build(job | {"client_jobs": "cj", "ip_jobs": None}, argv)[0][-2:] == ["t", "cj"]
    assert len(scripts.REGISTER_KEY.build(job | {"client_jobs": None, "ip_jobs": None}, argv)[0]) == len(job)
    with pytest.raises(ScriptArgumentError, match="after client_jobs"):
        scripts.REGISTER_KEY.build(job | {"client_jobs": None, "ip_jobs": "ij"}, argv)


@pytest.mark.parametrize(
    ("keys", "args", "message"),
    [
        ({"job": "j"}, {"attempt": 1}, r"missing \['now_ms'\], unknown nothing"),
        ({"job": "j"}, {"attempt": 1, "now_ms": 2, "now": 3}, r"missing nothing, unknown \['now'\]"),
        ({"job": "j", "jobs": "x"}, {"attempt": 1, "now_ms": 2}, r"KEYS: missing nothing, unknown \['jobs'\]"),
        ({}, {"attempt": 1, "now_ms": 2}, r"KEYS: missing \['job'\]"),
    ],
)
def test_a_missing_or_unknown_name_is_refused_before_anything_is_sent(
    keys: dict[str, str], args: dict[str, int], message: str
) -> None:
    with pytest.raises(ScriptArgumentError, match=message):
        scripts.MARK_TRIGGERED.build(keys, args)


def test_constants_are_declared_too() -> None:
    with pytest.raises(ScriptArgumentError, match="constants"):
        scripts.UPDATE.source({"ttl": 1})
    with pytest.raises(ScriptArgumentError, match="constants"):
        scripts.READ.source({"ttl": 1})


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="last"):
        Script("read", keys={"a*": "", "b": ""}, argv={}, returns="")
    with pytest.raises(ValueError, match="optional"):
        Script("read", keys={"a?": "", "b": ""}, argv={}, returns="")
    with pytest.raises(ValueError, match="identifier"):
        Script("read", keys={"job-hash": ""}, argv={}, returns="")


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
async def test_every_script_compiles(redis_client: aioredis.Redis, script: Script) -> None:
    source = script.source(constants(script))
    sha = await redis_client.script_load(source)
    assert await redis_client.script_exists(sha) == [True]
