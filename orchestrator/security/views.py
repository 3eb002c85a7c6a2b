"""HTTP handlers of the security layer: who am I, WebSocket tickets, the audit trail."""

from __future__ import annotations

from aiohttp import web

from orchestrator.errors import ValidationError
from orchestrator.security.policy import principal
from orchestrator.security.tickets import new_ticket, store_ticket, ticket_payload
from orchestrator.typedefs import AUDIT, AUTHENTICATOR, SETTINGS, STORE
from orchestrator.validation import parse_limit


async def whoami(request: web.Request) -> web.Response:
    """Whether this service wants a token, and (with a valid one) who it says the caller is."""
    required = request.app[AUTHENTICATOR].enabled
    body: dict[str, object] = {"authRequired": required, "authenticated": False}
    header = request.headers.get("Authorization", "")
    if required and header.lower().startswith("bearer "):
        try:
            who = request.app[AUTHENTICATOR].authenticate(header[7:].strip())
        except Exception as e:
            body["reason"] = str(e)
        else:
            body.update(
                authenticated=True, sub=who.sub, role=who.role, jobs=list(who.jobs) if who.jobs is not None else None
            )
    return web.json_response(body)


async def ws_ticket(request: web.Request) -> web.Response:
    """A single-use ticket for opening a WebSocket as the caller (browsers cannot set headers on one)."""
    settings = request.app[SETTINGS]
    ticket = new_ticket()
    await store_ticket(request.app[STORE], ticket, ticket_payload(principal(request)), settings.ws_ticket_ttl_seconds)
    return web.json_response({"ticket": ticket, "expiresIn": settings.ws_ticket_ttl_seconds}, status=201)


async def audit_entries(request: web.Request) -> web.Response:
    limit = parse_limit(request.query.get("limit"), default=100)
    before = request.query.get("before") or None
    if before is not None and not _stream_id(before):
        raise ValidationError("'before' is not an entry id this service returned", code="invalid_query", field="before")
    who = principal(request)
    entries, cursor = await request.app[AUDIT].entries(limit, before, who.may_touch if who.jobs is not None else None)
    return web.json_response({"entries": entries, "nextCursor": cursor})


def _stream_id(text: str) -> bool:
    """A stream entry id Redis takes as an exclusive bound: two 64-bit parts, above 0-0."""
    ms, sep, seq = text.partition("-")
    if not (sep and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and len(text) <= 41):
        return False
    return int(ms) < 2**64 and int(seq) < 2**64 and (int(ms), int(seq)) != (0, 0)
