"""Fan-out benchmark: N WebSocket subscribers to one job's events on one server process.

Starts `orchestrator serve` against a real Redis (DB 9 by default, flushed first), connects N sockets
to /ws/jobs/{job} from worker processes, measures the server's memory per idle connection, then sends
EVENTS updates at RATE per second and reports, per event and subscriber, the delay from the update's
HTTP response to its receipt (p50/p99). Loopback only; every process it starts is stopped by PID.

    python bench/fanout.py                       # 1,000 and 5,000 subscribers, 100 events at 10/s
    python bench/fanout.py --subscribers 1000 --events 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis

REPO = Path(__file__).resolve().parent.parent
JOB = "fanout"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- worker: holds sockets and records receipt times -------------------------------------------------


async def worker(base: str, count: int, events: int, out: Path) -> None:
    received: dict[int, list[int]] = {}
    ready = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(100)

        async def subscriber() -> None:
            nonlocal ready
            async with gate:
                ws = await session.ws_connect(f"{base}/ws/jobs/{JOB}", autoping=True, max_msg_size=0)
                await ws.receive()  # the snapshot
            ready += 1
            if ready == count:
                print("ready", flush=True)
            got = 0
            async for message in ws:
                now = time.monotonic_ns()
                version = json.loads(message.data)["version"]
                received.setdefault(version, []).append(now)
                got += 1
                if got == events:
                    break
            await ws.close()

        tasks = [asyncio.create_task(subscriber()) for _ in range(count)]
        await asyncio.wait(tasks, timeout=events / 5 + 120)
    out.write_text(json.dumps(received))


# --- driver --------------------------------------------------------------------------------------------


async def run_size(
    base: str, server_pid: int, subscribers: int, events: int, rate: float, workers: int
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="fanout-"))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/update", json={"jobId": JOB, "clientId": "c-0", "totalClients": 100_000}):
            pass
        before = rss_kib(server_pid)
        procs = []
        for w in range(workers):
            share = subscribers // workers + (1 if w < subscribers % workers else 0)
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--worker",
                    base,
                    str(share),
                    str(events),
                    str(tmp / f"w{w}.json"),
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 180)
                assert line.strip() == b"ready", line
            await asyncio.sleep(2)
            idle = rss_kib(server_pid)
            sent: dict[int, int] = {}
            interval = 1 / rate
            start = time.monotonic()
            for i in range(events):
                await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
                body = {"jobId": JOB, "clientId": f"c{subscribers}-{i + 1}", "totalClients": 100_000}
                async with session.post(f"{base}/api/update", json=body) as resp:
                    version = (await resp.json())["version"]
                    sent[version] = time.monotonic_ns()
            for proc in procs:
                await asyncio.wait_for(proc.wait(), events / rate + 120)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    lags: list[float] = []
    missing = 0
    for w in range(workers):
        received = json.loads((tmp / f"w{w}.json").read_text())
        for version, t_sent in sent.items():
            times = received.get(str(version), [])
            lags.extend((t - t_sent) / 1e6 for t in times)
    missing = subscribers * events - len(lags)
    return {
        "subscribers": subscribers,
        "p50_ms": percentile(lags, 50),
        "p99_ms": percentile(lags, 99),
        "max_ms": max(lags),
        "missing": missing,
        "kib_per_conn": (idle - before) / subscribers,
    }


async def drive(args: argparse.Namespace) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    redis.Redis.from_url(args.redis_url).flushdb()
    env = {
        **os.environ,
        "REDIS_URL": args.redis_url,
        "PORT": str(port),
        "LOG_DIR": tempfile.mkdtemp(prefix="fanout-logs-"),
        "WS_MAX_CONNECTIONS": "20000",
        "KEY_PREFIX": "bench:fanout:",
        # All the load comes from one IP and a few client ids: the write limits would refuse it.
        "RATE_LIMIT_CLIENT_WRITES": "0",
        "RATE_LIMIT_IP_WRITES": "0",
        # Thousands of sockets from this one address: the per-IP connection cap would refuse them.
        "MAX_CONNECTIONS_PER_IP": "0",
        "RATE_LIMIT_CLIENT_JOBS": "0",
        "RATE_LIMIT_IP_JOBS": "0",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve"], env=env, cwd=REPO, stderr=subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        results = []
        for size in args.subscribers:
            redis.Redis.from_url(args.redis_url).flushdb()
            results.append(await run_size(base, server.pid, size, args.events, args.rate, args.workers))
    finally:
        server.terminate()
        server.wait(10)
        redis.Redis.from_url(args.redis_url).flushdb()
    print(
        f"\nFan-out: {args.events} events at {args.rate:g}/s to one job, server on one process, "
        f"{args.workers} client processes on the same machine"
    )
    print(f"{'subscribers':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'missing':>8} {'KiB/conn':>9}")
    for r in results:
        print(
            f"{r['subscribers']:>11} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} "
            f"{r['missing']:>8} {r['kib_per_conn']:>9.1f}"
        )
    print("targets: p99 < 100 ms at 1,000, < 500 ms at 5,000; < 50 KiB per idle connection")


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        base, count, events, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
        asyncio.run(worker(base, count, events, out))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="client processes holding the sockets")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="a DB this benchmark may flush")
    asyncio.run(drive(parser.parse_args()))


if __name__ == "__main__":
    main()
