"""orchestrator.client and the CLI's client commands, against the real service on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from orchestrator.client import JobNotFoundError, OrchestratorClient, OrchestratorError
from orchestrator.models import JobStatus
from orchestrator.typedefs import SOCKETS, STORE
from tests.support import REPO, ServiceProcess

Client = TestClient[Any, Any]


def base_of(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_update_status_job(client: Client) -> None:
    async with OrchestratorClient(base_of(client)) as api:
        first = await api.update("c1", "a", 2, schema=[{"name": "x", "dataType": "BOOLEAN"}])
        assert first["message"] == "Update for job c1, client a recorded."
        assert (await api.update("c1", "a", 2))["alreadyRecorded"] is True
        status = await api.status("c1")
        assert status["progress"] == {"doneCount": 1, "totalClients": 2, "percentage": 50.0}
        job = await api.job("c1")
        assert [c["clientId"] for c in job["clients"]] == ["a"]
        with pytest.raises(JobNotFoundError) as missing:
            await api.status("nope")
        assert (missing.value.status, missing.value.code) == (404, "job_not_found")
        with pytest.raises(OrchestratorError) as conflict:
            await api.update("c1", "b", 3)
        assert (conflict.value.status, conflict.value.code) == (409, "total_clients_mismatch")


async def test_update_retries_a_503_then_succeeds(aiohttp_server: Callable[..., Any]) -> None:
    calls: list[dict[str, Any]] = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(await request.json())
        if len(calls) < 3:
            return web.json_response(
                {"error": {"code": "redis_unavailable", "message": "x"}}, status=503, headers={"Retry-After": "0"}
            )
        return web.json_response({"message": "ok"})

    app = web.Application()
    app.router.add_post("/api/update", flaky)
    server = await aiohttp_server(app)
    async with OrchestratorClient(str(server.make_url("")), retries=3) as api:
        assert await api.update("j", "c", 1) == {"message": "ok"}
    assert len(calls) == 3 and all(c == calls[0] for c in calls)


async def test_watch_resumes_across_dropped_connections(client: Client) -> None:
    await client.post("/api/update", json={"jobId": "w", "clientId": "c0", "totalClients": 6})
    seen: list[dict[str, Any]] = []
    async with OrchestratorClient(base_of(client), max_backoff=0.2) as api:

        async def follow() -> None:
            async for event in api.watch("w"):
                seen.append(event)
                if event.get("type") == "job.aggregating":
                    return

        watcher = asyncio.create_task(follow())
        for i in range(1, 6):
            await asyncio.sleep(0.1)
            # The server drops every socket (as on a restart); the watcher must resume without gaps.
            await client.app[SOCKETS].close_all()
            await client.post("/api/update", json={"jobId": "w", "clientId": f"c{i}", "totalClients": 6})
        await asyncio.wait_for(watcher, 10)
    assert seen[0]["type"] == "snapshot" and seen[0]["version"] == 2
    events = [e for e in seen if e["type"] != "snapshot"]
    versions = [e["version"] for e in events]
    assert versions == sorted(set(versions))
    assert versions[-1] == 8
    clients = [e["clientId"] for e in events if e["type"] == "client.done"]
    assert clients == [f"c{i}" for i in range(1, 6)]


async def test_wait_for_completion(client: Client) -> None:
    await client.post("/api/update", json={"jobId": "done", "clientId": "a", "totalClients": 1})
    async with OrchestratorClient(base_of(client)) as api:
        waiting = asyncio.create_task(api.wait_for_completion("done", timeout=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await client.app[STORE].finish_job("done", JobStatus.COMPLETED, result={"aggregatedResults": []})
        status = await waiting
        assert status["status"] == "COMPLETED"
        assert status["aggregatedResults"] == []
        # Already finished: returns at once from the snapshot.
        assert (await api.wait_for_completion("done", timeout=5))["status"] == "COMPLETED"
        await client.post("/api/update", json={"jobId": "slow", "clientId": "a", "totalClients": 2})
        with pytest.raises(TimeoutError):
            await api.wait_for_completion("slow", timeout=0.5)


async def test_cli_update_and_watch(tmp_path: Path) -> None:
    service = ServiceProcess({}, tmp_path / "logs")
    try:
        await service.ready("/readyz")
        schema = tmp_path / "schema.json"
        schema.write_text(json.dumps([{"name": "age", "dataType": "NUMERIC"}]))
        env = {"PATH": "/usr/bin:/bin", "ORCHESTRATOR_URL": service.base}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "orchestrator", *args],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )

        result = await asyncio.to_thread(
            cli, "update", "--job", "cli", "--client", "a", "--total", "2", "--schema", str(schema)
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["doneCount"] == 1
        refused = await asyncio.to_thread(cli, "update", "--job", "cli", "--client", "b", "--total", "5")
        assert refused.returncode == 1
        assert refused.stderr.startswith("orchestrator: 409 total_clients_mismatch:")

        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "watch", "cli", env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert watch.stdout is not None
            snapshot = json.loads(await asyncio.wait_for(watch.stdout.readline(), 30))
            assert (snapshot["type"], snapshot["job"]["doneCount"]) == ("snapshot", 1)
            done = await asyncio.to_thread(cli, "update", "--job", "cli", "--client", "b", "--total", "2")
            assert done.returncode == 0
            lines = [json.loads(await asyncio.wait_for(watch.stdout.readline(), 10)) for _ in range(2)]
            assert [e["type"] for e in lines] == ["client.done", "job.aggregating"]
        finally:
            watch.terminate()
            await watch.wait()
    finally:
        service.stop()


async def test_wait_for_completion_on_a_job_that_expires(client: Client) -> None:
    await client.post("/api/update", json={"jobId": "gone", "clientId": "a", "totalClients": 2})
    async with OrchestratorClient(base_of(client)) as api:
        waiting = asyncio.create_task(api.wait_for_completion("gone", timeout=10))
        await asyncio.sleep(0.2)
        store = client.app[STORE]
        assert (await store.expire_stale(now=store.job_ttl_ms + 10**13))[0] == ["gone"]
        with pytest.raises(JobNotFoundError, match="expired"):
            await waiting
