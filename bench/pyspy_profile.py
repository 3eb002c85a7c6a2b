"""Where a server's CPU goes under the benchmark load: py-spy samples, grouped by what the code does.

    pip install py-spy
    python bench/pyspy_profile.py                                  # orchestrator (production defaults), update
    python bench/pyspy_profile.py --scenario status
    python bench/pyspy_profile.py --server floor                   # the same for bench/floor_app.py
    python bench/pyspy_profile.py --server orchestrator-nolog      # ACCESS_LOG=false (see ORCHESTRATORS in run.py)

It starts the server as bench/run.py does (Redis DB 9, FLUSHDB'd, loopback only), warms it up, then samples
it with ``py-spy record --rate 100`` while ``wrk -t1 -c64 --latency`` loads it, and prints: the share of
samples in which each group of code is on the stack (inclusive, so groups overlap), that share turned into
CPU microseconds per request (from the process's CPU time over the run), and the hottest lines.
py-spy needs ptrace (root, or CAP_SYS_PTRACE in a container). Sampling pauses the process briefly, so
req/s here is a little lower than in run.py; the shares are what matters.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR)]

from load import STATUS_LUA, UPDATE_LUA, check_loopback, run_wrk, seed_status_jobs  # noqa: E402
from run import ORDER, bench_env, prepare_db, start, stop, wait_healthy  # noqa: E402

Stack = list[str]


def _file(frame: str) -> str:
    m = re.search(r"\(([^()]*?)(?::\d+)?\)$", frame)
    return m.group(1) if m else ""


def _func(frame: str) -> str:
    return frame.split(" (", 1)[0]


def _any(pred: Callable[[str], bool]) -> Callable[[Stack], bool]:
    return lambda stack: any(pred(f) for f in stack)


def _log_called_from(caller_file: str) -> Callable[[Stack], bool]:
    """A logging call made directly by code in ``caller_file``."""

    def match(stack: Stack) -> bool:
        for above, below in itertools.pairwise(stack):
            if caller_file in _file(above) and _file(below).startswith("logging/"):
                return True
        return False

    return match


def _in_guard(stack: Stack) -> bool:
    """In JobStore._guard or its context manager's enter/exit, called from store.py."""
    if any(_func(f) == "JobStore._guard" for f in stack):
        return True
    return any(
        _file(above) == "orchestrator/store.py" and _func(below).startswith("_AsyncGeneratorContextManager.")
        for above, below in itertools.pairwise(stack)
    )


def _is_view(frame: str) -> bool:
    return _func(frame).rsplit(".", 1)[-1] in ("update", "job_status") and (
        _file(frame) == "orchestrator/views.py" or "floor_app" in _file(frame)
    )


# (label, predicate on a stack listed root first). Inclusive: a sample counts for every group it matches.
GROUPS: list[tuple[str, Callable[[Stack], bool]]] = [
    ("logging, all (logging/*)", _any(lambda f: _file(f).startswith("logging/"))),
    ("  access log line (middleware.observe)", _log_called_from("orchestrator/middleware.py")),
    ("  INFO lines in the view (views.update)", _log_called_from("orchestrator/views.py")),
    ("  LogRecord creation (makeRecord)", _any(lambda f: _func(f) == "Logger.makeRecord")),
    ("  RotatingFileHandler.shouldRollover", _any(lambda f: _func(f) == "RotatingFileHandler.shouldRollover")),
    (
        "  StreamHandler.emit to stderr (not file)",
        lambda s: (
            any(_func(f) == "StreamHandler.emit" for f in s) and not any(_func(f) == "FileHandler.emit" for f in s)
        ),
    ),
    ("  FileHandler.emit (rotated file)", _any(lambda f: _func(f) == "FileHandler.emit")),
    ("  Formatter.format (all handlers)", _any(lambda f: _func(f) == "Formatter.format")),
    ("prometheus_client (labels/inc/observe)", _any(lambda f: _file(f).startswith("prometheus_client/"))),
    ("JobStore._guard (metrics, error mapping)", _in_guard),
    ("validation (orchestrator/validation.py)", _any(lambda f: _file(f) == "orchestrator/validation.py")),
    ("json encode/decode (json/*)", _any(lambda f: _file(f).startswith("json/"))),
    ("iso_ms (datetime formatting)", _any(lambda f: _func(f) == "iso_ms")),
    ("event listener (orchestrator/hub.py)", _any(lambda f: _file(f) == "orchestrator/hub.py")),
    ("redis-py (client, pool, EVALSHA/MULTI)", _any(lambda f: _file(f).startswith("redis/"))),
    ("  redis-py connection health check", _any(lambda f: _func(f) == "AbstractConnection.check_health")),
    ("Job.from_redis + status_body", _any(lambda f: _func(f) in ("Job.from_redis", "status_body"))),
    ("aiohttp json_response", _any(lambda f: _func(f) == "json_response")),
    ("middleware observe (inclusive)", _any(lambda f: _func(f) == "observe")),
    ("view update/job_status (inclusive)", _any(_is_view)),
    ("outside middleware+view (aiohttp, loop)", lambda s: not any(_func(f) == "observe" or _is_view(f) for f in s)),
]


def load_raw(path: Path) -> list[tuple[Stack, int]]:
    samples = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        samples.append((stack.split(";"), int(n)))
    return samples


def summarize(samples: list[tuple[Stack, int]], cpu_us_per_req: float, top: int) -> None:
    total = sum(n for _, n in samples) or 1
    print(f"{total} samples; server CPU {cpu_us_per_req:.0f} us per request")
    print(f"{'group (inclusive)':<44} {'share':>6} {'us/req':>7}")
    for label, pred in GROUPS:
        n = sum(k for stack, k in samples if pred(stack))
        if n:
            print(f"{label:<44} {100 * n / total:>5.1f}% {cpu_us_per_req * n / total:>7.0f}")
    print("\nhottest lines (self):")
    leaves: collections.Counter[str] = collections.Counter()
    for stack, n in samples:
        leaves[stack[-1]] += n
    for frame, n in leaves.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=ORDER, default="orchestrator")
    parser.add_argument("--scenario", choices=["update", "status"], default="update")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--raw-out", type=Path, help="keep py-spy's raw (collapsed) stacks in this file")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--force", action="store_true", help="flush the DB even if it holds other keys")
    args = parser.parse_args(argv)
    check_loopback(args.redis_url.replace("redis://", "http://", 1))
    if not args.redis_url.rstrip("/").rsplit("/", 1)[-1].isdigit() or args.redis_url.rstrip("/").endswith("/0"):
        parser.error("use a dedicated Redis DB (not 0) in --redis-url: it is flushed")
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")

    r = redis.Redis.from_url(args.redis_url, decode_responses=True)
    prepare_db(r, args.force)
    logdir = Path(tempfile.mkdtemp(prefix="orchestrator-profile-"))
    raw = args.raw_out or logdir / "pyspy.txt"
    server = start(args.server, bench_env(args.redis_url), logdir, args.redis_url)
    try:
        wait_healthy(server)
        print(f"started {server.name} pid {server.proc.pid} on {server.url}", flush=True)
        run_wrk(server.url, UPDATE_LUA, duration=2, connections=args.connections, script_args=["warm"])
        if args.scenario == "status":
            seed_status_jobs(server.url, args.jobs)
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(server.proc.pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--duration",
                str(round(args.duration) + 1),
                "-o",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(0.5)
            cpu0 = server.cpu_seconds()
            if args.scenario == "update":
                res = run_wrk(
                    server.url,
                    UPDATE_LUA,
                    duration=args.duration,
                    connections=args.connections,
                    script_args=[f"p{int(time.time())}"],
                )
            else:
                res = run_wrk(
                    server.url,
                    STATUS_LUA,
                    duration=args.duration,
                    connections=args.connections,
                    script_args=[str(args.jobs)],
                )
            cpu = server.cpu_seconds() - cpu0
            _, err = spy.communicate(timeout=60)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')}")
        print(
            f"{args.server} {args.scenario}: {res.rps:.1f} req/s, p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms "
            f"(under sampling), errors {res.errors}\n"
        )
        summarize(load_raw(raw), 1e6 * cpu / max(res.requests, 1), args.top)
    finally:
        stop([server])
        r.flushdb()
        r.close()
        if args.raw_out is None:
            shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
