"""A fake MIP SMPC coordinator: a real aiohttp app on a loopback port, scriptable per test."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

Reply = tuple[int, Any]  # (status, JSON body or None)


@dataclass
class FakeCoordinator:
    """Answers triggers and polls from scripts; by default it accepts a job and has its result at once.

    ``trigger_replies``: replies to the next triggers (then 200). ``poll_replies[job]``: replies to the
    next polls of a job (then the last one again, or COMPLETED with ``outputs[job]``). ``hang``: never
    answer anything. ``hold``: keep answering RUNNING until released.
    """

    outputs: dict[str, list[Any]] = field(default_factory=dict)
    trigger_replies: list[Reply] = field(default_factory=list)
    poll_replies: dict[str, list[Reply]] = field(default_factory=lambda: defaultdict(list))
    hang: bool = False
    hold: asyncio.Event | None = None
    triggers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    trigger_bodies: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    polls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    triggered: asyncio.Event = field(default_factory=asyncio.Event)
    # Push the result to the returnUrl a trigger carries (and answer polls with 204 meanwhile).
    push: bool = False
    pushed: list[tuple[str, int]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/secure-aggregation/job-id/{jobId}", self._trigger)
        app.router.add_get("/api/get-result/job-id/{jobId}", self._result)
        return app

    async def _trigger(self, request: web.Request) -> web.StreamResponse:
        job = request.match_info["jobId"]
        if self.hang:
            await asyncio.sleep(3600)
        self.trigger_bodies[job].append(await request.json())
        if self.trigger_replies:
            status, body = self.trigger_replies.pop(0)
            if status in (200, 409):
                self.triggers[job] += 1
                self.triggered.set()
            return _reply(status, body)
        self.triggers[job] += 1
        self.triggered.set()
        body = self.trigger_bodies[job][-1]
        if self.push and isinstance(body, dict) and body.get("returnUrl"):
            task = asyncio.create_task(self._push(job, body["returnUrl"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"message": "queued"})

    async def _push(self, job: str, url: str) -> None:
        await asyncio.sleep(0.1)
        result = {"jobId": job, "computationType": "sum", "status": "COMPLETED", "computationOutput": self.outputs[job]}
        async with aiohttp.ClientSession() as session, session.post(url, json=result) as resp:
            self.pushed.append((url, resp.status))

    async def _result(self, request: web.Request) -> web.StreamResponse:
        job = request.match_info["jobId"]
        self.polls[job] += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.push or (self.hold is not None and not self.hold.is_set()):
            return web.json_response({"jobId": job, "computationType": "sum", "status": "RUNNING"})
        script = self.poll_replies.get(job)
        if script:
            status, body = script.pop(0) if len(script) > 1 else script[0]
            return _reply(status, body)
        if job not in self.outputs:
            return web.Response(status=204)
        return web.json_response(
            {"jobId": job, "computationType": "sum", "status": "COMPLETED", "computationOutput": self.outputs[job]}
        )


def _reply(status: int, body: Any) -> web.StreamResponse:
    if body is None:
        return web.Response(status=status)
    return web.json_response(body, status=status)
