"""Who sends a write: the subject and role of its token (or anonymous) and its address."""

from __future__ import annotations

from aiohttp import web

from orchestrator.models import Actor
from orchestrator.security.guard import client_ip
from orchestrator.security.policy import principal


def request_actor(request: web.Request) -> Actor:
    """Who sends this write, for its rate limits, its job quotas and its audit entry."""
    who = principal(request)
    return Actor(
        who.sub if who.authenticated else "anonymous",
        who.role if who.authenticated else "",
        client_ip(request),
        who.sub if who.authenticated else None,
    )
