"""The security middleware: authentication and roles, write rate limits, the audit trail, CORS and the
security headers of every response."""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from orchestrator.errors import ApiError, DomainError, Forbidden, Unauthorized, http_status
from orchestrator.models import iso_ms
from orchestrator.security.audit import log_entry
from orchestrator.security.browsers import check_host, check_media_type, check_origin
from orchestrator.security.policy import (
    ACCESS,
    ADMINS,
    ANY_HOST,
    AUDIT_JOB,
    AUDIT_LOGGED,
    AUDIT_OUTCOME,
    AUDITED,
    PARTICIPANT_READS,
    PRINCIPAL,
    SOCKET_ROUTES,
    require_job,
)
from orchestrator.security.tickets import redeem_ticket
from orchestrator.security.tokens import ANONYMOUS, NOBODY, AuthError, Principal, principal_from
from orchestrator.settings import Settings
from orchestrator.store import JobStore, StoreRefused, StoreUnavailable, now_ms
from orchestrator.typedefs import AUDIT, AUTHENTICATOR, SETTINGS, STORE

logger = logging.getLogger("orchestrator.security")

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ADDRESS = re.compile(r"[0-9A-Fa-f:.]+")
_UPDATE = ("POST", "/api/update")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="computations-orchestrator"'}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def route_key(request: web.Request) -> tuple[str, str] | None:
    """(method, route) of a matched route, HEAD read as GET (aiohttp serves HEAD for every GET route);
    None for static files and for requests no route matched (they get their 404 or 405)."""
    resource = request.match_info.route.resource
    if resource is None or resource.name == "static":
        return None
    return ("GET" if request.method == "HEAD" else request.method), resource.canonical


def client_ip(request: web.Request) -> str:
    """The peer's address; behind a proxy listed in TRUSTED_PROXIES, the address it says it forwarded
    (the last one in X-Forwarded-For that is not itself a trusted proxy)."""
    peer = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if not trusted or peer not in trusted:
        return peer
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    for address in reversed(forwarded):
        if address not in trusted:
            # An address, nothing else: it goes into counters' names and log lines.
            return address[:64] if _ADDRESS.fullmatch(address[:64]) else "invalid-forwarded-for"
    return peer


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings: Settings = request.app[SETTINGS]
    key = route_key(request)
    # With or without authentication: a DNS-rebinding page names its own host (security.browsers).
    if key not in ANY_HOST:
        check_host(request, settings)
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        return preflight(request, settings)
    enabled = request.app[AUTHENTICATOR].enabled
    # A route the table does not name is for admins only (deny by default).
    rule = ACCESS.get(key, ADMINS) if key is not None else None
    who = ANONYMOUS if not enabled else NOBODY
    write = request.method in _WRITE_METHODS and key is not None
    status = 500
    rate_checked = False
    try:
        _check_origin(request, settings, key, write)
        if rule is not None and enabled:
            who = await identify(request)
            await _check_access(request, who, key, rule)
        request[PRINCIPAL] = who
        if write:
            assert key is not None
            check_media_type(request, key)
        if write and key != _UPDATE:
            rate_checked = True
            await check_rate(request, settings, who)
        response = await handler(request)
        status = response.status
        return response
    except DomainError as e:
        status = http_status(e)
        if write and not rate_checked and not request.get(AUDITED, False) and status != 429:
            # Refused before any limit was checked (no token, a forged one, a bad body): such requests
            # count against the caller's limits too, so a flood of them is cut off.
            await check_rate(request, settings, who)
        raise
    except web.HTTPException as e:
        status = e.status
        raise
    except StoreUnavailable:
        status = 503
        raise
    finally:
        if write:
            await _audit(request, who, status, enabled)


def _check_origin(request: web.Request, settings: Settings, key: tuple[str, str] | None, write: bool) -> None:
    """A write's Origin against CORS_ALLOWED_ORIGINS, a socket's against WS_ALLOWED_ORIGINS."""
    if write:
        check_origin(request, settings.cors_allowed_origins, "CORS_ALLOWED_ORIGINS")
    elif key in SOCKET_ROUTES:
        check_origin(request, settings.ws_allowed_origins, "WS_ALLOWED_ORIGINS")


async def _check_access(
    request: web.Request, who: Principal, key: tuple[str, str] | None, rule: frozenset[str]
) -> None:
    """Refuse a role the route's rule does not name, a job outside the token's patterns, and a client's
    read of a job it takes no part in."""
    if who.role not in rule:
        raise Forbidden(
            f"Role {who.role} may not {request.method} {key[1] if key else request.path}",
            code="role_not_allowed",
            role=who.role,
        )
    if job_id := request.match_info.get("jobId"):
        require_job(who, job_id)
        if who.role == "client" and key in PARTICIPANT_READS:
            store: JobStore = request.app[STORE]
            if not await store.is_participant(job_id, who.sub):
                raise Forbidden(
                    f"Client {who.sub} takes no part in job {job_id}", code="not_a_participant", jobId=job_id
                )


async def _audit(request: web.Request, who: Principal, status: int, enabled: bool) -> None:
    """Log a write's audit entry, and store it unless the update's script did."""
    stored = request.get(AUDITED, False)  # by the update's script
    if stored and request.get(AUDIT_LOGGED, False):
        return
    entry = audit_entry(request, who, status)
    log_entry(entry)
    # Stored: what an identified caller asked for. Refusals of unidentified callers are only logged, so
    # that nobody can push the real entries out of the bounded stream.
    if not stored and (who.authenticated or not enabled):
        await record(request, entry)


async def identify(request: web.Request) -> Principal:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'", code="invalid_token", headers=_CHALLENGE)
        try:
            return request.app[AUTHENTICATOR].authenticate(token.strip())
        except AuthError as e:
            raise Unauthorized(f"Token refused: {e}", code="invalid_token", headers=_CHALLENGE) from None
    ticket = request.query.get("ticket")
    if ticket is not None and request.path.startswith("/ws"):
        redeemed = await redeem_ticket(request.app[STORE], ticket)
        if redeemed is None:
            raise Unauthorized("WebSocket ticket unknown, used or expired", code="invalid_ticket")
        return principal_from(json.loads(redeemed))
    raise Unauthorized("A bearer token is required", code="token_required", headers=_CHALLENGE)


async def check_rate(request: web.Request, settings: Settings, who: Principal) -> None:
    if not (settings.rate_limit_client_writes or settings.rate_limit_ip_writes):
        return
    client = who.sub if who.authenticated else None
    limits = (settings.rate_limit_client_writes, settings.rate_limit_ip_writes)
    # Unidentified writes (refused ones, the coordinator's callback) count in a bucket of their own, so
    # they cannot spend the writes of identified clients behind the same address.
    bucket = "ip" if who.authenticated or not request.app[AUTHENTICATOR].enabled else "anon"
    audit = request.app[AUDIT]
    wait = await audit.rate_limited(client, client_ip(request), settings.rate_limit_window_seconds, limits, bucket)
    if wait > 0:
        raise rate_limited(wait)


def rate_limited(wait_seconds: float) -> ApiError:
    retry_after = max(1, int(wait_seconds + 0.999))
    return ApiError(
        f"Too many writes; retry in {retry_after} s",
        code="rate_limited",
        http_status=429,
        headers={"Retry-After": str(retry_after)},
        retryAfter=retry_after,
    )


def audit_entry(request: web.Request, who: Principal, status: int) -> dict[str, str]:
    return {
        "at": iso_ms(now_ms()) or "",
        "who": who.sub if who.authenticated else ("anonymous" if status != 401 else "unknown"),
        "role": who.role if who.authenticated else "",
        "ip": client_ip(request),
        "action": f"{request.method} {request.raw_path.partition('?')[0][:300]}",
        "job": request.match_info.get("jobId", "") or request.get(AUDIT_JOB, ""),
        "status": str(status),
        "outcome": request.get(AUDIT_OUTCOME, ""),
    }


async def record(request: web.Request, entry: dict[str, str]) -> None:
    """Store the audit entry of a request already answered: whatever happens here must not change the answer
    (the entry is in the log already, log_entry)."""
    try:
        await request.app[AUDIT].record(entry)
    except StoreRefused as e:
        logger.debug("Audit entry not stored (%s): %s", e, entry)  # the store logs the episode, once
    except StoreUnavailable as e:
        logger.warning("Audit entry not stored (%s): %s", e, entry)
    except RedisError:
        logger.exception("Audit entry not stored: %s", entry)


def preflight(request: web.Request, settings: Settings) -> web.Response:
    origin = request.headers.get("Origin", "")
    if not cors_allowed(origin, settings):
        return web.json_response(
            {"error": {"code": "cors_not_allowed", "message": "This origin may not call the API"}}, status=403
        )
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


def cors_allowed(origin: str, settings: Settings) -> bool:
    allowed = settings.cors_allowed_origins
    return bool(origin) and ("*" in allowed or origin.rstrip("/") in allowed)


def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response; CORS headers for allowed origins. Called by the outermost
    middleware, which sees every response (errors included) before it is sent."""
    if response.prepared:  # a WebSocket, whose handshake is long gone
        return
    headers = response.headers
    if "Content-Security-Policy" not in headers:
        headers.extend(SECURITY_HEADERS)
    origin = request.headers.get("Origin")
    if origin and cors_allowed(origin, request.app[SETTINGS]):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
