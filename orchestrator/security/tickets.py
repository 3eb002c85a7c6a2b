"""WebSocket tickets: a browser cannot set headers on a WebSocket, so it trades its token for a single-use
ticket (POST /api/ws-ticket) and opens the socket with ``?ticket=``."""

from __future__ import annotations

import json
import secrets
from typing import Any, cast

from orchestrator.security.tokens import Principal
from orchestrator.store import JobStore


def new_ticket() -> str:
    return secrets.token_urlsafe(24)


def ticket_payload(who: Principal) -> str:
    data: dict[str, Any] = {"sub": who.sub, "role": who.role, "exp": who.expires_at}
    if who.jobs is not None:
        data["jobs"] = list(who.jobs)
    return json.dumps(data)


async def store_ticket(store: JobStore, ticket: str, payload: str, ttl_seconds: float) -> None:
    async with store.guard("ticket"):
        await store.redis.set(store.keys.ws_ticket(ticket), payload, px=int(ttl_seconds * 1000))


async def redeem_ticket(store: JobStore, ticket: str) -> str | None:
    """The ticket's payload, once: GETDEL makes it single-use across replicas."""
    if not 16 <= len(ticket) <= 64:
        return None
    async with store.guard("ticket"):
        return cast(str | None, await store.redis.getdel(store.keys.ws_ticket(ticket)))
