"""Aggregation benchmark: from the last client's update to `job.completed` on a WebSocket.

Starts a fake SMPC coordinator that answers at once (in this process, on loopback) and
`orchestrator serve` on a real Redis (DB 9, flushed before and after, its own KEY_PREFIX), follows
/ws, and measures:
  1. latency: JOBS jobs one after the other; for each, the time from the HTTP response to the last
     client's update to the receipt of the job's `job.completed` event (p50/p99);
  2. throughput: CONCURRENT jobs whose last updates are all sent at once: all must complete, with
     exactly one coordinator trigger per job.

    python bench/aggregation.py                       # 300 jobs for latency, 1,000 at once
    python bench/aggregation.py --jobs 100 --concurrent 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import redis
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
SCHEMA = [{"name": "active", "dataType": "BOOLEAN"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def start_coordinator(triggers: Counter[str]) -> tuple[web.AppRunner, int]:
    """A fake coordinator on loopback that queues every job and has its result at once; its port."""

    async def trigger(request: web.Request) -> web.Response:
        triggers[request.match_info["jobId"]] += 1
        return web.json_response({"message": "queued"})

    async def result(request: web.Request) -> web.Response:
        job = request.match_info["jobId"]
        return web.json_response({"jobId": job, "status": "COMPLETED", "computationOutput": [2, 1]})

    coordinator = web.Application()
    coordinator.router.add_post("/api/secure-aggregation/job-id/{jobId}", trigger)
    coordinator.router.add_get("/api/get-result/job-id/{jobId}", result)
    runner = web.AppRunner(coordinator, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def server_env(redis_url: str, port: int, coordinator_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "KEY_PREFIX": "bench:agg:",
        # All the load comes from one IP and a few client ids: the write limits would refuse it.
        "RATE_LIMIT_CLIENT_WRITES": "0",
        "RATE_LIMIT_IP_WRITES": "0",
        "RATE_LIMIT_CLIENT_JOBS": "0",
        "RATE_LIMIT_IP_JOBS": "0",
        "PORT": str(port),
        "LOG_DIR": tempfile.mkdtemp(prefix="agg-logs-"),
        "LOG_LEVEL": "WARNING",
        "SMPC_COORDINATOR_URL": f"http://127.0.0.1:{coordinator_port}",
        # Delivery is measured apart; here, nothing to write.
        "ENABLE_FILESYSTEM_SAVING": "false",
    }


async def wait_ready(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(200):
        try:
            async with session.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)


class Jobs:
    """Sends the updates and notes when each job's `job.completed` arrives on /ws."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.completed: dict[str, float] = {}
        self.arrived = asyncio.Event()

    async def follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            event = json.loads(message.data)
            if event.get("type") == "job.completed":
                self.completed[event["jobId"]] = time.perf_counter()
                self.arrived.set()

    async def update(self, job: str, client: str) -> float:
        body = {"jobId": job, "clientId": client, "totalClients": 2, "schema": SCHEMA}
        async with self.session.post(f"{self.base}/api/update", json=body) as resp:
            assert resp.status == 200, await resp.text()
        return time.perf_counter()

    async def latencies(self, count: int) -> list[float]:
        """1. latency, one job at a time: ms from the last update's response to its job.completed."""
        lags = []
        for n in range(count):
            job = f"lat-{n}"
            await self.update(job, "a")
            sent = await self.update(job, "b")
            while job not in self.completed:
                self.arrived.clear()
                await asyncio.wait_for(self.arrived.wait(), 10)
            lags.append((self.completed[job] - sent) * 1000)
        return lags

    async def many(self, count: int) -> tuple[list[str], float]:
        """2. many at once: the jobs, and the seconds until all completed (or two minutes passed)."""
        jobs = [f"many-{n}" for n in range(count)]
        await asyncio.gather(*(self.update(job, "a") for job in jobs))
        started = time.perf_counter()
        await asyncio.gather(*(self.update(job, "b") for job in jobs))
        deadline = time.monotonic() + 120
        while not all(job in self.completed for job in jobs) and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 1)
        return jobs, time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    triggers: Counter[str] = Counter()
    runner, coordinator_port = await start_coordinator(triggers)
    redis.Redis.from_url(args.redis_url).flushdb()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "serve",
        env=server_env(args.redis_url, port, coordinator_port),
        cwd=REPO,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            await wait_ready(session, base)
            ws = await session.ws_connect(f"{base}/ws")
            await ws.receive()  # snapshot
            measured = Jobs(session, base)
            follower = asyncio.create_task(measured.follow(ws))
            lags = await measured.latencies(args.jobs)
            jobs, elapsed = await measured.many(args.concurrent)
            follower.cancel()
            await ws.close()
    finally:
        server.terminate()
        await server.wait()
        await runner.cleanup()
        redis.Redis.from_url(args.redis_url).flushdb()
    report(args, lags, jobs, elapsed, measured.completed, triggers)


def report(
    args: argparse.Namespace,
    lags: list[float],
    jobs: list[str],
    elapsed: float,
    completed: dict[str, float],
    triggers: Counter[str],
) -> None:
    done = sum(1 for job in jobs if job in completed)
    many_triggers = sum(triggers[job] for job in jobs)
    print("\nAggregation with a coordinator that answers at once (server on one process, real Redis)")
    print(f"latency, last update -> job.completed on /ws, {args.jobs} jobs one at a time:")
    print(
        f"  p50 {percentile(lags, 50):.1f} ms  p99 {percentile(lags, 99):.1f} ms  max {max(lags):.1f} ms"
        "  (target: p99 < 50 ms)"
    )
    print(
        f"{args.concurrent} jobs at once: {done} completed in {elapsed:.2f} s, {many_triggers} coordinator triggers "
        f"(target: all complete, exactly {args.concurrent} triggers); "
        f"jobs triggered more than once: {sum(1 for j in jobs if triggers[j] > 1)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="a DB this benchmark may flush")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
