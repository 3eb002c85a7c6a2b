from __future__ import annotations

import pytest

from orchestrator.settings import Settings, SettingsError


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
