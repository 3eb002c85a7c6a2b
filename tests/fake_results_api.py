"""A fake results API: a real aiohttp app on a loopback port that fails the first N calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeResultsApi:
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = "0"
    calls: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/results", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        call = {"headers": dict(request.headers), "body": await request.json()}
        self.calls.append(call)
        if len(self.calls) <= self.fail_first:
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
            return web.json_response({"error": "busy"}, status=self.fail_status, headers=headers)
        self.accepted.append(call)
        return web.json_response({"stored": True}, status=201)
