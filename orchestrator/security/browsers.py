"""What keeps a web page the operator happens to visit from acting on the service (with authentication
off, the browser on this machine is the only credential): the Host a request names (DNS rebinding), the
Origin a browser says a write or a WebSocket comes from (cross-site requests), and the media type of a
write's body (an HTML form posts text/plain, urlencoded or multipart, across sites and without asking)."""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from orchestrator.errors import ApiError, UnsupportedMediaType
from orchestrator.security.policy import BODY_TYPES, JSON
from orchestrator.settings import Settings
from orchestrator.typedefs import SETTINGS

_JSON_ONLY = frozenset({JSON})
_OCTETS = "application/octet-stream"
_UNSPECIFIED = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(host: str) -> tuple[str, int | None]:
    """The name (lower case, no brackets or trailing dot) and the port of a Host header's value."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, sep, port = host.rpartition(":")
        if not sep:
            name, port = host, ""
    return name.rstrip("."), int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else None


@functools.lru_cache(maxsize=16)
def _known_hosts(
    bind: str, public_base_url: str | None, allowed: tuple[str, ...]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The names a Host may carry, and the suffixes (".example.org") it may end with."""
    names = {"localhost", "127.0.0.1", "::1"}
    bind = bind.strip("[]").lower().rstrip(".")
    if bind not in _UNSPECIFIED:  # 0.0.0.0 says nothing of the names clients use
        names.add(bind)
    if public_base_url and (public := urlsplit(public_base_url).hostname):
        names.add(public.rstrip("."))
    suffixes = tuple(entry.rstrip(".") for entry in allowed if entry.startswith("."))
    names.update(entry.strip("[]").rstrip(".") for entry in allowed)
    names.update(suffix[1:] for suffix in suffixes)
    return frozenset(names), suffixes


def host_allowed(host: str, settings: Settings) -> bool:
    if "*" in settings.allowed_hosts:
        return True
    name, _ = split_host(host)
    names, suffixes = _known_hosts(settings.host, settings.public_base_url, settings.allowed_hosts)
    if name in names or (suffixes and name.endswith(suffixes)):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_host(request: web.Request, settings: Settings) -> None:
    # No Host at all: an HTTP/1.0 client, not a browser (browsers always send one).
    host = request.headers.get("Host")
    if host is not None and not host_allowed(host, settings):
        raise ApiError(
            "This service does not answer to that host name: list it in ALLOWED_HOSTS",
            code="host_not_allowed",
            http_status=421,
            host=host[:255],
        )


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's Origin names the host (and port) the request was sent to."""
    parts = urlsplit(origin)
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        origin_port = parts.port or default
    except ValueError:
        return False
    name, port = split_host(host)
    return default is not None and parts.hostname == name and origin_port == (port or default)


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: origin checks protect browsers' ambient credentials
    origin = origin.rstrip("/")
    return "*" in allowed or origin in allowed or same_origin(origin, browser_host(request))


def browser_host(request: web.Request) -> str:
    """The Host the browser sent: behind a proxy listed in TRUSTED_PROXIES that rewrites it (nginx's
    default), the one the proxy forwarded in X-Forwarded-Host."""
    if request.remote in request.app[SETTINGS].trusted_proxies:
        forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.headers.get("Host", "")


def check_origin(request: web.Request, allowed: tuple[str, ...], setting: str) -> None:
    if not origin_allowed(request, allowed):
        raise ApiError(
            f"Requests from this origin are not allowed (same origin, or one listed in {setting})",
            code="origin_not_allowed",
            http_status=403,
            origin=request.headers.get("Origin", "")[:255],
        )


def check_media_type(request: web.Request, key: tuple[str, str]) -> None:
    """A write's Content-Type is one its route takes (policy.BODY_TYPES). Without a body it may be left
    out, or be application/octet-stream (what aiohttp's client puts on an empty POST): no form sends either."""
    accepted = BODY_TYPES.get(key, _JSON_ONLY)
    if "Content-Type" not in request.headers:
        if request.body_exists:
            raise UnsupportedMediaType(
                f"A request body needs a Content-Type: {' or '.join(sorted(accepted))}", accepted=sorted(accepted)
            )
        return
    media_type = request.content_type
    if media_type in accepted or (
        JSON in accepted and media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    if media_type == _OCTETS and not request.body_exists:
        return
    raise UnsupportedMediaType(
        f"Content-Type must be {' or '.join(sorted(accepted))}, got {media_type[:100] or 'none'}",
        accepted=sorted(accepted),
    )
