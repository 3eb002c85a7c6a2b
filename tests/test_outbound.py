"""Outbound answers are read whole, within a limit: an SMPC result far over one buffer (64 KiB) completes its
job, one over MAX_RESULT_BYTES fails it at once with the reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from orchestrator.outbound import BodyTooLarge, read_body
from orchestrator.settings import Settings, SettingsError
from tests.fake_coordinator import FakeCoordinator
from tests.support import final_status

Client = TestClient[Any, Any]
# 10 features of 10,000 values each: an output of 10^5 values, about 1 MB of JSON.
FEATURES, WIDTH = 10, 10_000
SCHEMA = [
    {"featureName": f"f{n}", "dataType": "NUMERIC", "offset": n * WIDTH, "length": WIDTH} for n in range(FEATURES)
]
OUTPUT = [n * 1.5 for n in range(FEATURES * WIDTH)]
SETTINGS: dict[str, Any] = {
    "aggregation_workers": 2,
    "smpc_request_timeout_seconds": 5.0,
    # Short, so that a result that is never read whole fails the test quickly rather than hanging it.
    "aggregation_timeout_seconds": 8.0,
}


async def report(client: Client, job: str) -> None:
    for cid in ("c0", "c1"):
        body = {"jobId": job, "clientId": cid, "totalClients": 2, "schema": SCHEMA}
        resp = await client.post("/api/update", json=body)
        assert resp.status == 200, await resp.text()


async def test_a_result_of_100000_values_completes_the_job(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    client = await agg_client(**SETTINGS)
    coordinator.outputs["big"] = OUTPUT
    await report(client, "big")
    status = await final_status(client, "big", within=15)
    assert status["status"] == "COMPLETED", status.get("failureReason")
    features = {f["featureName"]: f for f in status["aggregatedResults"]}
    assert len(features) == FEATURES
    assert features["f0"]["sumOfField1"] == 1.5
    last = FEATURES * WIDTH - 1
    assert features[f"f{FEATURES - 1}"][f"sumOfField{WIDTH - 1}"] == last * 1.5
    assert coordinator.triggers["big"] == 1


async def test_a_result_over_max_result_bytes_fails_the_job_at_once(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator
) -> None:
    client = await agg_client(**SETTINGS, smpc_max_result_bytes=100_000)
    coordinator.outputs["huge"] = OUTPUT
    started = time.monotonic()
    await report(client, "huge")
    status = await final_status(client, "huge", within=15)
    assert status["status"] == "FAILED"
    assert "over 100000 bytes (MAX_RESULT_BYTES)" in status["failureReason"]
    assert time.monotonic() - started < 5  # not a transient error polled again until the deadline
    assert coordinator.polls["huge"] == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_read_body_reads_everything_up_to_the_limit(aiohttp_server: Callable[..., Any], chunked: bool) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, in many network reads

    async def answer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        for start in range(0, len(body), 50_000):
            await resp.write(body[start : start + 50_000])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", answer)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/")) as resp:
            assert await read_body(resp, len(body)) == body
        async with session.get(server.make_url("/")) as resp:
            with pytest.raises(BodyTooLarge):
                await read_body(resp, len(body) - 1)
        async with session.get(server.make_url("/")) as resp:
            assert await read_body(resp, 1000, truncate=True) == body[:1000]


def test_max_result_bytes_is_a_setting() -> None:
    assert Settings.from_env({}).smpc_max_result_bytes == 32 * 1024 * 1024
    assert Settings.from_env({"MAX_RESULT_BYTES": "65536"}).smpc_max_result_bytes == 65536
    with pytest.raises(SettingsError, match="MAX_RESULT_BYTES"):
        Settings.from_env({"MAX_RESULT_BYTES": "12"})
