"""The checks a whole Settings must pass (after from_env and after overrides), each a small named rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from orchestrator.settings.declare import BASE_URL, URL, SettingsError, declared, spec_of

if TYPE_CHECKING:
    from orchestrator.settings import Settings


def choices_held(settings: Settings) -> None:
    for attribute, spec in declared(type(settings)):
        value = getattr(settings, attribute)
        if spec.choices and value not in spec.choices:
            raise SettingsError(f"{spec.env}: must be {spec.expected}, got {value!r}")


def smpc_has_coordinator(settings: Settings) -> None:
    if settings.aggregation_backend == "smpc" and not settings.smpc_coordinator_url:
        raise SettingsError("AGGREGATION_BACKEND: smpc needs SMPC_COORDINATOR_URL")


def urls_are_http(settings: Settings) -> None:
    for attribute, spec in declared(type(settings)):
        value = getattr(settings, attribute)
        if spec.parser in (URL, BASE_URL) and value and urlsplit(value).scheme not in {"http", "https"}:
            raise SettingsError(f"{spec.env}: must be {spec.expected}, got {value!r}")


def liveness_outlasts_ping(settings: Settings) -> None:
    if settings.pubsub_liveness_seconds <= settings.pubsub_ping_seconds:
        raise SettingsError("PUBSUB_LIVENESS_SECONDS: must be longer than PUBSUB_PING_SECONDS")


def redis_url_scheme(settings: Settings) -> None:
    if settings.redis_url is None:
        return
    scheme = urlsplit(settings.redis_url).scheme
    if scheme not in {"redis", "rediss", "unix"}:
        raise SettingsError(f"REDIS_URL: scheme must be redis://, rediss:// or unix://, got {scheme or 'none'!r}")


def port_in_range(settings: Settings) -> None:
    # Checked again here for --port, which overrides PORT.
    spec = spec_of(type(settings), "port")
    if not spec.accepts(settings.port):
        raise SettingsError(f"{spec.env}: must be {spec.expected}, got {settings.port}")


def host_not_empty(settings: Settings) -> None:
    if not settings.host:
        raise SettingsError("HOST: must not be empty")


def secret_long_enough(settings: Settings) -> None:
    if settings.auth_jwt_secret is not None and len(settings.auth_jwt_secret.encode()) < 32:
        raise SettingsError("AUTH_JWT_SECRET: must be at least 32 bytes (HS256 needs a key as long as its hash)")


def public_key_usable(settings: Settings) -> None:
    if settings.auth_jwt_public_key is None:
        return
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(settings.auth_jwt_public_key.encode())
    except ValueError:
        raise SettingsError("AUTH_JWT_PUBLIC_KEY_FILE: not a PEM public key") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise SettingsError("AUTH_JWT_PUBLIC_KEY_FILE: must be an RSA (RS256) or EC P-256 (ES256) public key")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp256r1":
        raise SettingsError("AUTH_JWT_PUBLIC_KEY_FILE: an EC key must be on P-256 (ES256)")


def key_prefix_plain(settings: Settings) -> None:
    if any(c in settings.key_prefix for c in "{} \t\n"):
        raise SettingsError(f"KEY_PREFIX: must not contain braces or whitespace, got {settings.key_prefix!r}")


# In this order: the first rule a Settings breaks names the error.
RULES: tuple[Callable[[Settings], None], ...] = (
    choices_held,
    smpc_has_coordinator,
    urls_are_http,
    liveness_outlasts_ping,
    redis_url_scheme,
    port_in_range,
    host_not_empty,
    secret_long_enough,
    public_key_usable,
    key_prefix_plain,
)
