"""Settings: the only module that reads the environment.

Every setting is declared once, as a field of one of the group dataclasses (`serving.py`, `jobs.py`) with its
variable, default, bounds and doc (`declare.py`); `Settings` is all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.settings.declare import SettingsError, declared, read, spec_of, without_credentials
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
from orchestrator.settings.rules import RULES
from orchestrator.settings.serving import (
    CLIENT_URL,
    LOG_LEVELS,
    HttpSettings,
    LogSettings,
    SecuritySettings,
    WebSocketSettings,
)
from orchestrator.settings.table import settings_table_markdown

__all__ = ["LOG_LEVELS", "Settings", "SettingsError", "client_base_url", "settings_table_markdown"]


# The fields run in the reverse of this order: HttpSettings' first.
@dataclass(frozen=True)
class Settings(
    SecuritySettings,
    DeliverySettings,
    AggregationSettings,
    WebSocketSettings,
    LogSettings,
    JobSettings,
    RedisSettings,
    HttpSettings,
):
    """The service's whole configuration, immutable; build it with `from_env`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, validating every value."""
        env = os.environ if environ is None else environ
        values = {attribute: read(spec, env) for attribute, spec in declared(cls)}
        if values["redis_url"] is None and (env.get(REDIS_HOST.env) or env.get(REDIS_PORT.env)):
            values["redis_url"] = f"redis://{read(REDIS_HOST, env)}:{read(REDIS_PORT, env)}/0"
        if values["smpc_coordinator_url"] is None and (host := read(COORDINATOR_HOST, env)):
            values["smpc_coordinator_url"] = f"http://{host}:{read(COORDINATOR_PORT, env)}"
        if values["smpc_coordinator_url"] and not env.get(spec_of(cls, "aggregation_backend").env):
            values["aggregation_backend"] = "smpc"
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced (None values are ignored), validated."""
        settings = replace(self, **{k: v for k, v in changes.items() if v is not None})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError, naming the variable, for the first rule these settings break."""
        for rule in RULES:
            rule(self)

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwt_secret is not None or self.auth_jwt_public_key is not None

    @property
    def redis_label(self) -> str:
        """The Redis location for logs, with any password removed."""
        return without_credentials(self.redis_url) or "embedded fakeredis (in-process, not persisted)"

    @property
    def delivery_destinations(self) -> tuple[str, ...]:
        """Where each completed job's result goes: "api" and/or "file"; each flag does only its own thing."""
        destinations = []
        if self.enable_api_sending and self.results_api_url:
            destinations.append("api")
        if self.enable_filesystem_saving:
            destinations.append("file")
        return tuple(destinations)

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration for the start-up log: every setting but the secrets, URLs without
        credentials, and what follows from them (the Redis location, the kind of auth, result destinations)."""
        public = {
            attribute: spec.parser.show(getattr(self, attribute))
            for attribute, spec in declared(type(self))
            if not spec.secret
        }
        auth = ("HS256 " if self.auth_jwt_secret else "") + ("RS256/ES256" if self.auth_jwt_public_key else "")
        return {
            "redis": self.redis_label,
            "auth": auth.strip() or ("OFF (--insecure-no-auth)" if self.insecure_no_auth else "off"),
            "results_destinations": list(self.delivery_destinations) or "none (results are logged)",
            **public,
        }


def client_base_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the CLI's client commands find the service: ORCHESTRATOR_URL, else the local default."""
    url: str = read(CLIENT_URL, os.environ if environ is None else environ)
    return url
