"""A delivery another worker made final is not sent again: the worker stops as soon as it sees the record final."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from orchestrator.app import create_app
from orchestrator.settings import Settings
from orchestrator.typedefs import STORE
from tests.fake_results_api import FakeResultsApi

Client = TestClient[Any, Any]


@dataclass
class FinishedElsewhereApi(FakeResultsApi):
    """A results API that refuses every call (503); on the first one, ``finish`` runs: another worker
    delivering the same result meanwhile, before the answer (``later`` false) or while ours waits to retry."""

    finish: Callable[[], Awaitable[None]] | None = None
    later: bool = False
    _tasks: tuple[asyncio.Task[None], ...] = ()

    async def _receive(self, request: web.Request) -> web.Response:
        if self.finish is not None and not self.calls:
            if self.later:
                self._tasks = (asyncio.create_task(self._finish_soon(self.finish)),)
            else:
                await self.finish()
        return await super()._receive(request)

    async def _finish_soon(self, finish: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(0.1)
        await finish()


@pytest.mark.parametrize("later", [False, True], ids=["before-the-answer", "during-the-wait"])
async def test_a_delivery_finished_by_another_worker_is_not_sent_again(
    redis_client: aioredis.Redis,
    settings: Settings,
    aiohttp_server: Callable[..., Any],
    aiohttp_client: Callable[..., Any],
    later: bool,
) -> None:
    api = FinishedElsewhereApi(fail_first=1000, retry_after="0.5" if later else "0", later=later)
    server = await aiohttp_server(api.app())
    overrides: dict[str, Any] = {
        "results_api_url": str(server.make_url("/results")),
        "enable_filesystem_saving": False,
        "aggregation_workers": 1,
        "delivery_attempts": 5,
        "delivery_backoff_seconds": 0.01,
        "delivery_max_backoff_seconds": 0.5,
    }
    client: Client = await aiohttp_client(create_app(settings.with_overrides(**overrides), redis=redis_client))
    store = client.app[STORE]
    other = {"state": "delivered", "attempts": 1, "httpStatus": 201, "by": "another worker"}

    async def finish() -> None:
        assert await store.record_delivery("final", "api", other, event="delivery.succeeded", details=other)

    api.finish = finish
    for cid in ("c1", "c2"):
        resp = await client.post("/api/update", json={"jobId": "final", "clientId": cid, "totalClients": 2})
        assert resp.status == 200
    for _ in range(100):
        if api.calls:
            break
        await asyncio.sleep(0.05)
    # Long enough for every further attempt a worker that ignores the final record would make.
    await asyncio.sleep(2.0)
    assert len(api.calls) == 1
    assert await store.delivery("final", "api") == other
    events = [e["type"] for e in await store.event_history("final")]
    assert events.count("delivery.succeeded") == 1 and "delivery.failed" not in events
