from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settings import Settings, SettingsError, client_base_url
from orchestrator.settings.declare import BASE_URL, LIST, PEM_FILE, TEXT, URL, Spec, declared, read
from orchestrator.settings.jobs import COORDINATOR_PORT
from orchestrator.settings.table import GROUPS


def test_defaults_match_the_original() -> None:
    settings = Settings.from_env({})
    assert settings.port == 5000
    assert settings.redis_url is None
    assert settings.job_ttl_seconds == 7 * 24 * 3600
    assert settings.max_body_bytes == 1024 * 1024


def test_redis_host_and_port_build_a_url_and_redis_url_wins() -> None:
    assert Settings.from_env({"REDIS_HOST": "redis", "REDIS_PORT": "6380"}).redis_url == "redis://redis:6380/0"
    env = {"REDIS_HOST": "redis", "REDIS_URL": "rediss://user:secret@example:6390/2"}
    settings = Settings.from_env(env)
    assert settings.redis_url == "rediss://user:secret@example:6390/2"
    assert "secret" not in str(settings.public_dict())
    assert Settings.from_env({"REDIS_URL": "unix:///run/redis.sock"}).redis_url == "unix:///run/redis.sock"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"REDIS_PORT": "x"}, "REDIS_PORT"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"REDIS_TIMEOUT": "-1"}, "REDIS_TIMEOUT"),
        ({"JOB_TTL_SECONDS": "5"}, "JOB_TTL_SECONDS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG"),
        ({"MAX_BODY_BYTES": "1e6"}, "MAX_BODY_BYTES"),
        ({"KEY_PREFIX": "a{b}"}, "KEY_PREFIX"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        Settings.from_env(env)


def test_overrides_are_validated() -> None:
    settings = Settings.from_env({}).with_overrides(port=8080, host=None)
    assert (settings.port, settings.host) == (8080, "127.0.0.1")
    with pytest.raises(SettingsError, match=r"^REDIS_URL: "):
        Settings().with_overrides(redis_url="mysql://x")


def _specs() -> list[Spec]:
    return [spec for _, specs in GROUPS for spec in specs]


def _bad_values(spec: Spec) -> list[str]:
    """Values the declaration refuses: past each bound, outside the choices, or not of the parser's kind."""
    if spec.choices:
        return ["not-a-choice"]
    if spec.parser.unit:
        below = [] if spec.low is None else [str(spec.low if spec.above else spec.low - 1)]
        above = [] if spec.high is None else [str(spec.high + 1)]
        return [*below, *above, "not a number"]
    return [] if spec.parser in (TEXT, URL, BASE_URL, LIST, PEM_FILE) else ["not valid"]


def _env(spec: Spec, raw: str) -> dict[str, str]:
    # The original's coordinator port is read only with its host.
    return {spec.env: raw, "COORDINATOR_HOST": "coordinator"} if spec is COORDINATOR_PORT else {spec.env: raw}


@pytest.mark.parametrize("spec", _specs(), ids=lambda spec: spec.env)
def test_every_setting_parses_its_default_and_its_bounds(spec: Spec) -> None:
    if spec.default is not None and not spec.from_file:
        assert read(spec, {spec.env: spec.parser.text(spec.default)}) == spec.default
    assert read(spec, {}) == spec.default
    for bound in (spec.low, spec.high):
        if bound is not None and not (bound == spec.low and spec.above):
            assert read(spec, {spec.env: str(bound)}) == bound


@pytest.mark.parametrize(
    ("spec", "raw"), [(spec, raw) for spec in _specs() for raw in _bad_values(spec)], ids=lambda v: getattr(v, "env", v)
)
def test_every_setting_refuses_a_bad_value_in_one_line(spec: Spec, raw: str) -> None:
    message = f"{spec.env}: must be {spec.expected}, got {raw!r}"
    with pytest.raises(SettingsError) as refused:
        read(spec, {spec.env: raw})
    assert str(refused.value) == message
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(_env(spec, raw))
    assert str(refused.value) == message


def test_error_messages_keep_their_form() -> None:
    cases = {
        "PORT": ("x", "an integer 1-65535"),
        "REDIS_TIMEOUT": ("0", "seconds, 0-60"),
        "JOB_TTL_SECONDS": ("5", "an integer >= 60"),
        "MAX_BODY_BYTES": ("1e6", "bytes, 1024-1073741824"),
        "FD_RESERVE": ("-1", "an integer 0-100000 (0: off)"),
        "MAX_REDIS_MEMORY_FRACTION": ("1.5", "a fraction 0-1 (0: off)"),
        "COLLECTION_TIMEOUT": ("0", "seconds, 1-2592000"),
        "LOG_LEVEL": ("loud", "one of CRITICAL, DEBUG, ERROR, INFO, WARNING"),
        "AGGREGATION_BACKEND": ("magic", "one of none, secure-sum, smpc, sum"),
        "ACCESS_LOG": ("maybe", "true or false"),
        "RESULTS_FORMATS": ("csv", "json, txt or json,txt"),
        # The three whose words are not derived from the bounds: what they said before the declarations.
        "PARSE_OFFLOAD_BYTES": ("-1", "bytes, 0 or more (0: parse every body on the event loop)"),
        "VECTOR_MAX_ROWS": ("0", "an integer 1-10^12"),
        "WS_ALLOWED_ORIGINS": ("ftp://x", "a comma-separated list of origins like https://example.org, or *"),
    }
    for name, (raw, expected) in cases.items():
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({name: raw})
        assert str(refused.value) == f"{name}: must be {expected}, got {raw!r}"
    with pytest.raises(SettingsError, match=r"^MAX_JOB_VECTOR_BYTES: must be bytes, 1024-1099511627776, got '1'$"):
        Settings.from_env({"MAX_JOB_VECTOR_BYTES": "1"})
    with pytest.raises(SettingsError, match=r"^RESULTS_API_URL: must be an http:// or https:// URL, got 'ftp://x'$"):
        Settings.from_env({"RESULTS_API_URL": "ftp://x"})


def test_secrets_come_from_files_and_are_never_shown(tmp_path: Path) -> None:
    secrets = {
        "AUTH_JWT_SECRET": "s3cret-" * 6,
        "REDIS_PASSWORD": "pa55word",
        "RESULTS_API_TOKEN": "t0ken",
        "REDIS_URL": "redis://user:hidden@redis:6379/0",
    }
    assert {spec.env for spec in _specs() if spec.secret} == set(secrets)
    settings = Settings.from_env(secrets)
    assert (settings.auth_jwt_secret, settings.redis_password) == (secrets["AUTH_JWT_SECRET"], "pa55word")
    shown = f"{settings.public_dict()} {settings!r}"
    assert not [value for value in ("s3cret", "pa55word", "t0ken", "hidden") if value in shown]
    assert settings.public_dict()["redis"] == "redis://redis:6379/0"
    (tmp_path / "password").write_text("from-file\n")
    env = {"REDIS_PASSWORD": "from-env", "REDIS_PASSWORD_FILE": str(tmp_path / "password")}
    assert Settings.from_env(env).redis_password == "from-file"
    with pytest.raises(SettingsError, match=r"^AUTH_JWT_SECRET_FILE: cannot read /nonexistent: No such file"):
        Settings.from_env({"AUTH_JWT_SECRET_FILE": "/nonexistent"})


def test_composite_and_legacy_variables() -> None:
    settings = Settings.from_env({"COORDINATOR_HOST": "coord", "COORDINATOR_PORT": "8080"})
    assert (settings.smpc_coordinator_url, settings.aggregation_backend) == ("http://coord:8080", "smpc")
    settings = Settings.from_env({"SMPC_COORDINATOR_URL": "http://c/", "AGGREGATION_BACKEND": "sum"})
    assert (settings.smpc_coordinator_url, settings.aggregation_backend) == ("http://c", "sum")
    assert Settings.from_env({"REDIS_PORT": "6390"}).redis_url == "redis://localhost:6390/0"
    assert Settings.from_env({"HOST": "0.0.0.0", "LOG_LEVEL": " debug"}).log_level == "DEBUG"
    with pytest.raises(SettingsError, match=r"^HOST: must not be empty$"):
        Settings.from_env({"HOST": ""})
    assert client_base_url({}) == "http://127.0.0.1:5000"
    assert client_base_url({"ORCHESTRATOR_URL": "http://svc"}) == "http://svc"


def test_public_dump_has_every_setting_but_the_secrets() -> None:
    dump = Settings.from_env({}).public_dict()
    public = {attribute for attribute, spec in declared(Settings) if not spec.secret}
    assert public <= dump.keys()
    assert not {attribute for attribute, spec in declared(Settings) if spec.secret} & dump.keys()
