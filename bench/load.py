"""Load an already running server with wrk and print req/s and p50/p99 latency.

    python bench/load.py --url http://127.0.0.1:5000 update          # POST /api/update, a new job each request
    python bench/load.py --url http://127.0.0.1:5000 status          # GET /api/job-status/{jobId} of existing jobs
    python bench/load.py --url http://127.0.0.1:5000 both --duration 10 --connections 64

``update`` posts {"jobId":"b-<tag>-<n>","clientId":"c1","totalClients":2}: every request creates a distinct
job with one client of two, so no job ever reaches AGGREGATING (no aggregation is measured).
``status`` first creates the jobs s-1 .. s-<jobs> through POST /api/update on the same server (harmless if
they exist), then reads them round robin. The wrk Lua scripts are bench/update.lua and bench/status.lua;
wrk runs as ``wrk -t1 -c64 -d10s --latency`` unless told otherwise. Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
UPDATE_LUA = BENCH_DIR / "update.lua"
STATUS_LUA = BENCH_DIR / "status.lua"

_UNIT_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("raw")
        return d


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"refusing to load {url!r}: only loopback addresses (127.0.0.1, ::1, localhost)")


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_TO_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Figures from wrk's text report (run with --latency)."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", output, re.M)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    if not (rps and total and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output (was --latency given?):\n{output}")
    non2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", output, re.M)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), (int(g) for g in sock.groups()), strict=True)) if sock else {}
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=socket_errors,
        raw=output,
    )


def run_wrk(
    url: str,
    script: Path,
    *,
    duration: float,
    connections: int = 64,
    threads: int = 1,
    script_args: list[str] | None = None,
    timeout_s: int = 2,
) -> WrkResult:
    check_loopback(url)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(script),
        url.rstrip("/"),
    ]
    if script_args:
        cmd += ["--", *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return parse_wrk(proc.stdout)


async def _seed(url: str, count: int, concurrency: int) -> int:
    import aiohttp

    ok = 0
    ids = iter(range(1, count + 1))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for i in ids:
            body = {"jobId": f"s-{i}", "clientId": "c1", "totalClients": 2}
            async with session.post(f"{url.rstrip('/')}/api/update", json=body) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    raise RuntimeError(f"seeding s-{i}: HTTP {resp.status}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


def seed_status_jobs(url: str, count: int, concurrency: int = 16) -> int:
    """Create the jobs s-1 .. s-count through the server's own POST /api/update."""
    check_loopback(url)
    return asyncio.run(_seed(url, count, concurrency))


def fmt_row(name: str, r: WrkResult) -> str:
    return f"{name:<8} {r.rps:>10.1f} req/s   p50 {r.p50_ms:>7.2f} ms   p99 {r.p99_ms:>7.2f} ms   errors {r.errors}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["update", "status", "both"], nargs="?", default="both")
    parser.add_argument("--url", required=True, help="base URL of the running server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to create and read for 'status'")
    parser.add_argument("--tag", default=None, help="jobId tag for 'update' (default: time-based, unique)")
    parser.add_argument("--raw", action="store_true", help="also print wrk's own report")
    args = parser.parse_args(argv)
    check_loopback(args.url)
    if args.threads != 1 and args.scenario != "status":
        print(
            "note: update.lua numbers jobs per wrk thread; use -t1 (the default) for distinct jobIds", file=sys.stderr
        )
    tag = args.tag or f"l{int(time.time())}"
    results: dict[str, WrkResult] = {}
    if args.scenario in ("update", "both"):
        results["update"] = run_wrk(
            args.url,
            UPDATE_LUA,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            script_args=[tag],
        )
    if args.scenario in ("status", "both"):
        seeded = seed_status_jobs(args.url, args.jobs)
        print(f"created/confirmed {seeded} jobs s-1..s-{args.jobs} for the status run", file=sys.stderr)
        results["status"] = run_wrk(
            args.url,
            STATUS_LUA,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            script_args=[str(args.jobs)],
        )
    print(f"wrk -t{args.threads} -c{args.connections} -d{max(1, round(args.duration))}s --latency against {args.url}")
    for name, r in results.items():
        if args.raw:
            print(r.raw)
        print(fmt_row(name, r))
    print(json.dumps({k: v.summary() for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
