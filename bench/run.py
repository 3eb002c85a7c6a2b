"""The benchmark driver: the orchestrator against the floor of its design, in one run.

    python bench/run.py                      # 10 s per wrk run, 64 connections, Redis DB 9
    python bench/run.py --duration 5 --rounds 2

What it does, in order:
  1. FLUSHDB of its own Redis database (default redis://127.0.0.1:6379/9; it refuses DB 0, and refuses a
     database holding keys outside "bench:" unless --force).
  2. Starts four servers on free loopback ports, as subprocesses, all on that real Redis:
       orchestrator             `python -m orchestrator serve`, production defaults (access log ON, INFO
                                logging to stderr and to the rotated file in LOG_DIR, a temporary folder)
       orchestrator-nolog       the same with ACCESS_LOG=false (for information)
       orchestrator-quiet       ACCESS_LOG=false and LOG_LEVEL=WARNING: no log line at all per request
                                (for information: what is left once logging is out of the way)
       floor                    bench/floor_app.py: the same one Lua call per update, nothing else
     Each has a KEY_PREFIX of its own (PREFIXES), hence its own events channel. --private-redis starts a
     redis-server of its own instead of using --redis-url, for a commandstats count nobody else touches.
  3. Warms each up briefly, flushes the database again, then for each round runs wrk
     (`wrk -t1 -c64 -d10s --latency`) on POST /api/update (bench/update.lua: a new job per request,
     totalClients=2, one client, so nothing reaches AGGREGATING) against each server; then creates jobs
     s-1..s-N and runs GET /api/job-status/{jobId} (bench/status.lua) against each.
  4. Around every wrk run: CONFIG RESETSTAT, then INFO commandstats, to count the Redis commands the
     clients sent per request (Lua-internal commands are reported apart), and the server's CPU time.
  5. Prints the table (req/s, p50, p99, ratio to the floor) and the targets: ratio >= 0.7 and
     p99 < 25 ms at 64 connections, for the orchestrator with its production defaults.
  6. Stops its subprocesses by PID (also on error or Ctrl-C) and flushes its database.

CONFIG RESETSTAT resets the statistics of the whole Redis server; other clients of the same server during
the run show up as "other" commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO)]

from load import STATUS_LUA, UPDATE_LUA, WrkResult, check_loopback, run_wrk, seed_status_jobs  # noqa: E402

from orchestrator import scripts  # noqa: E402

KEY_PREFIX = "bench:"
# Each server has a key prefix of its own, hence an events channel of its own: the orchestrator's event
# listener (one pub/sub subscription per process) then hears only its own updates' events, as a lone
# replica would, and the idle servers are not woken by the events of the one under load.
PREFIXES = {
    "floor": f"{KEY_PREFIX}floor:",
    "orchestrator": f"{KEY_PREFIX}orch:",
    "orchestrator-nolog": f"{KEY_PREFIX}nolog:",
    "orchestrator-quiet": f"{KEY_PREFIX}quiet:",
}
RATIO_TARGET = 0.7
P99_TARGET_MS = 25.0
# name -> (label, environment on top of the production defaults); "floor" is bench/floor_app.py.
ORCHESTRATORS: dict[str, tuple[str, dict[str, str]]] = {
    "orchestrator": ("orchestrator (access log on)", {"ACCESS_LOG": "true"}),
    "orchestrator-nolog": ("orchestrator (ACCESS_LOG=false)", {"ACCESS_LOG": "false"}),
    "orchestrator-quiet": ("orchestrator (no log, WARNING)", {"ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"}),
}
LABELS = {"floor": "floor (bench/floor_app.py)"} | {k: v[0] for k, v in ORCHESTRATORS.items()}
ORDER = ["floor", *ORCHESTRATORS]
NOISE_PER_REQUEST = 0.01
# Commands the driver itself sends while a window is open (not counted as the servers').
_DRIVER_COMMANDS = {"config|resetstat", "info"}


def _lua_commands(source: str) -> set[str]:
    return {m.lower() for m in re.findall(r"redis\.call\('(\w+)'", source)}


UPDATE_LUA_COMMANDS = _lua_commands(scripts.UPDATE.body)


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    prefix: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """user+system CPU time of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Run:
    server: str
    scenario: str
    round: int
    wrk: WrkResult
    processed: int  # requests the server completed against Redis (update: jobs created; status: EXECs/EVALSHAs)
    commands: dict[str, int]
    cpu_us_per_request: float
    cpu_util: float  # server CPU seconds per second of the run: 1.0 is one core saturated
    notes: list[str] = field(default_factory=list)

    def client_commands(self) -> dict[str, int]:
        """Commands sent by clients (not run inside a Lua script), the driver's own left out."""
        lua = UPDATE_LUA_COMMANDS if self.scenario == "update" else set()
        return {c: n for c, n in self.commands.items() if c not in lua and c not in _DRIVER_COMMANDS}

    def server_commands(self) -> dict[str, float]:
        """Client commands at >= 0.01 per request: the server's. The rest is other clients of a shared
        Redis (or an occasional health-check PING); see noise()."""
        per = {c: n / max(self.processed, 1) for c, n in self.client_commands().items()}
        return {c: v for c, v in per.items() if v >= NOISE_PER_REQUEST}

    def noise(self) -> int:
        significant = self.server_commands()
        return sum(n for c, n in self.client_commands().items() if c not in significant)

    def round_trips(self) -> float:
        """Per request: a MULTI/.../EXEC pipeline is one round trip (its EXEC)."""
        return sum(v for c, v in self.server_commands().items() if c not in ("multi", "hgetall"))

    def lua_commands(self) -> dict[str, int]:
        if self.scenario != "update":
            return {}
        return {c: n for c, n in self.commands.items() if c in UPDATE_LUA_COMMANDS}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(name: str, cmd: list[str], env: dict[str, str], port: int, log_path: Path) -> Server:
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
    log.close()
    return Server(name, port, proc, log_path, env["KEY_PREFIX"])


def start(name: str, base_env: dict[str, str], logdir: Path, redis_url: str) -> Server:
    """Start server ``name`` (see ORDER) on a free loopback port."""
    port = free_port()
    if name == "floor":
        cmd = [
            sys.executable,
            str(BENCH_DIR / "floor_app.py"),
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--key-prefix",
            PREFIXES[name],
        ]
        env = base_env | {"KEY_PREFIX": PREFIXES[name]}
    else:
        cmd = [sys.executable, "-m", "orchestrator", "serve"]
        env = base_env | ORCHESTRATORS[name][1]
        env |= {"LOG_DIR": str(logdir / name), "PORT": str(port), "KEY_PREFIX": PREFIXES[name]}
    return start_server(name, cmd, env, port, logdir / f"{name}.stderr.log")


def bench_env(redis_url: str) -> dict[str, str]:
    """The servers' environment: this one, less anything that would override the production defaults."""
    env = {k: v for k, v in os.environ.items() if k not in {"HOST", "PORT", "ACCESS_LOG", "LOG_LEVEL", "LOG_DIR"}}
    # The janitor's sweep (at start, then every minute) is pushed out of the measured windows so that
    # INFO commandstats shows only request traffic; it costs one ZRANGEBYSCORE a minute otherwise.
    return env | {
        "REDIS_URL": redis_url,
        "HOST": "127.0.0.1",
        # wrk is one IP and one client id: limits that never bite, so the limiter's work is still measured.
        "RATE_LIMIT_CLIENT_WRITES": "1000000000",
        "RATE_LIMIT_IP_WRITES": "1000000000",
        # Every update of the update scenario creates a job: job quotas that never bite either.
        "RATE_LIMIT_CLIENT_JOBS": "1000000000",
        "RATE_LIMIT_IP_JOBS": "1000000000",
        "JANITOR_INTERVAL_SECONDS": "3600",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    }


def wait_healthy(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}); see {server.log_path}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not become healthy in {timeout}s; see {server.log_path}")


def stop(servers: list[Server]) -> None:
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
    for s in servers:
        try:
            s.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(timeout=5)


def commandstats(r: redis.Redis) -> dict[str, int]:
    info = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def prepare_db(r: redis.Redis, force: bool) -> None:
    foreign = [k for k in r.scan_iter(count=1000) if not k.startswith(KEY_PREFIX)]
    if foreign and not force:
        raise SystemExit(
            f"Redis DB {r.connection_pool.connection_kwargs.get('db')} holds keys outside {KEY_PREFIX!r} "
            f"(e.g. {foreign[:3]}); pick another --redis-url DB or pass --force"
        )
    r.flushdb()


def measure(
    r: redis.Redis, server: Server, scenario: str, rnd: int, *, duration: float, connections: int, jobs: int, tag: str
) -> Run:
    r.config_resetstat()
    cpu0 = server.cpu_seconds()
    if scenario == "update":
        res = run_wrk(server.url, UPDATE_LUA, duration=duration, connections=connections, script_args=[tag])
    else:
        res = run_wrk(server.url, STATUS_LUA, duration=duration, connections=connections, script_args=[str(jobs)])
    util = (server.cpu_seconds() - cpu0) / res.seconds
    time.sleep(0.5)  # let requests still in flight when wrk stopped reach Redis
    cpu = server.cpu_seconds() - cpu0
    stats = commandstats(r)
    if scenario == "update":
        # Every update of this run created its own job b-<tag>-<n>: count them.
        processed = sum(1 for _ in r.zscan_iter(f"{server.prefix}jobs:created", match=f"b-{tag}-*", count=1000))
    else:
        # The floor reads in a MULTI/EXEC pipeline, the service in one read-only script (which Redis still
        # runs when it is out of memory): either is one round trip.
        processed = stats.get("exec", 0) or stats.get("evalsha", 0)
    notes = []
    if res.errors:
        notes.append(f"{res.errors} errors: non2xx={res.non2xx} socket={res.socket_errors}")
    return Run(server.name, scenario, rnd, res, processed, stats, 1e6 * cpu / max(processed, 1), util, notes)


def rotated(order: list[str], rnd: int) -> list[str]:
    """Round 1 in the given order, round 2 starting from the second server, and so on."""
    k = (rnd - 1) % len(order)
    return order[k:] + order[:k]


def median_run(runs: list[Run]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.wrk.rps for r in runs),
        "p50": statistics.median(r.wrk.p50_ms for r in runs),
        "p99": statistics.median(r.wrk.p99_ms for r in runs),
        "cpu": statistics.median(r.cpu_us_per_request for r in runs),
        "util": statistics.median(r.cpu_util for r in runs),
        "errors": sum(r.wrk.errors for r in runs),
    }


def report(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    print()
    print(
        f"wrk -t1 -c{args.connections} -d{max(1, round(args.duration))}s --latency; "
        f"{args.rounds} round(s), medians shown when more than one"
    )
    header = (
        f"{'scenario':<8} {'server':<32} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6} {'errors':>6} "
        f"{'CPU us/req':>10} {'CPU %':>6} {'CPU ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for scenario in ("update", "status"):
        floor = median_run([r for r in runs if r.server == "floor" and r.scenario == scenario])
        for name in ORDER:
            m = median_run([r for r in runs if r.server == name and r.scenario == scenario])
            m["ratio"] = m["rps"] / floor["rps"] if floor["rps"] else float("nan")
            m["cpu_ratio"] = floor["cpu"] / m["cpu"] if m["cpu"] else float("nan")
            summary[f"{scenario}/{name}"] = m
            print(
                f"{scenario:<8} {LABELS[name]:<32} {m['rps']:>8.1f} {m['p50']:>7.2f} {m['p99']:>7.2f} "
                f"{m['ratio']:>6.2f} {m['errors']:>6} {m['cpu']:>10.0f} {100 * m['util']:>5.0f}% {m['cpu_ratio']:>9.2f}"
            )
    print(
        "ratio: req/s over the floor's. CPU us/req: the server process's CPU time per request; CPU %: of one core\n"
        "during the run (~100% = the single-threaded server is the bottleneck); CPU ratio: floor's CPU/req over\n"
        "this one's, the throughput ratio to expect when both are CPU-bound, less sensitive to a noisy machine."
    )
    print()
    print("Redis commands sent by the server, per request (INFO commandstats around each run):")
    for r in runs:
        per = ", ".join(f"{c} {v:.3f}" for c, v in sorted(r.server_commands().items())) or "none"
        print(
            f"  round {r.round} {r.scenario:<6} {r.server:<19} {r.processed:>7} requests reached Redis; "
            f"round trips/request {r.round_trips():.3f} ({per}); other commands in the window: {r.noise()}"
        )
    print(
        f"  (other: commands at < {NOISE_PER_REQUEST}/request, i.e. other clients of a shared Redis or a "
        "health-check PING; use --private-redis for a clean count)"
    )
    first_update = next(r for r in runs if r.scenario == "update" and r.server == "orchestrator")
    lua = first_update.lua_commands()
    n = max(first_update.processed, 1)
    print(
        "  (inside the UPDATE script, per update: "
        + ", ".join(f"{c} {k / n:.2f}" for c, k in sorted(lua.items()))
        + ")"
    )
    print(
        "  (a status read is one round trip: the floor's MULTI/HGETALL x3/EXEC pipeline, counted as its EXEC; the "
        "service's read-only script doing the same HGETALLs, counted as its EVALSHA)"
    )
    print()
    print(f"Targets, orchestrator with production defaults (access log on), {args.connections} connections:")
    verdicts: dict[str, Any] = {}
    for scenario in ("update", "status"):
        m = summary[f"{scenario}/orchestrator"]
        ok_ratio = m["ratio"] >= RATIO_TARGET
        ok_p99 = m["p99"] < P99_TARGET_MS
        verdicts[scenario] = {"ratio_ok": ok_ratio, "p99_ok": ok_p99}
        print(
            f"  {scenario:<6} ratio orchestrator/floor {m['ratio']:.2f} (target >= {RATIO_TARGET}): "
            f"{'PASS' if ok_ratio else 'FAIL'};  p99 {m['p99']:.2f} ms (target < {P99_TARGET_MS:.0f} ms): "
            f"{'PASS' if ok_p99 else 'FAIL'}"
        )
    upd = [r for r in runs if r.scenario == "update" and r.server == "orchestrator"]
    evalsha = sum(r.commands.get("evalsha", 0) for r in upd) / max(sum(r.processed for r in upd), 1)
    others = {c: v for r in upd for c, v in r.server_commands().items() if c != "evalsha"}
    trips_ok = abs(evalsha - 1) < 0.005 and not others
    print(
        f"  update Redis round trips: {evalsha:.3f} EVALSHA per HTTP update, other commands per update: "
        f"{others or 'none'} (target: exactly 1): {'PASS' if trips_ok else 'CHECK'}"
    )
    verdicts["update_round_trips_ok"] = trips_ok
    return {"summary": summary, "verdicts": verdicts, "evalsha_per_update": evalsha}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="a dedicated DB (FLUSHDB'd)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run this many times (medians)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of update load per server first")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs created for the status runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' log folder")
    parser.add_argument("--force", action="store_true", help="flush the DB even if it holds other keys")
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a redis-server of its own (no persistence, a free loopback port) instead of --redis-url, "
        "so INFO commandstats counts only this benchmark",
    )
    parser.add_argument("--raw", action="store_true", help="print wrk's own reports too")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be 1-120 seconds")
    check_loopback(args.redis_url.replace("redis://", "http://", 1))
    db = int((urlsplit(args.redis_url).path or "/0").lstrip("/") or 0)
    if db == 0:
        parser.error("use a dedicated Redis DB (not 0), e.g. redis://127.0.0.1:6379/9: it is flushed")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # so that `kill PID` still stops the subprocesses
    logdir = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    private: subprocess.Popen[bytes] | None = None
    try:
        if args.private_redis:
            private, args.redis_url = start_private_redis(logdir)
        return _main(args, logdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if private is not None:
            private.terminate()
            try:
                private.wait(timeout=10)
            except subprocess.TimeoutExpired:
                private.kill()
                private.wait()
            print(f"stopped private redis-server (pid {private.pid})", file=sys.stderr)
        if args.keep_logs:
            print(f"server logs kept in {logdir}", file=sys.stderr)
        else:
            shutil.rmtree(logdir, ignore_errors=True)


def start_private_redis(logdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("--private-redis needs redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(logdir),
            "--logfile",
            str(logdir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/9"
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"private redis-server did not start; see {logdir / 'redis.log'}") from None
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    print(f"started private redis-server pid {proc.pid} on 127.0.0.1:{port}", flush=True)
    return proc, url


def _main(args: argparse.Namespace, logdir: Path) -> int:
    r = redis.Redis.from_url(args.redis_url, decode_responses=True)
    prepare_db(r, args.force)
    base_env = bench_env(args.redis_url)
    servers: list[Server] = []
    runs: list[Run] = []
    try:
        for name in ORDER:
            servers.append(start(name, base_env, logdir, args.redis_url))
        for s in servers:
            wait_healthy(s)
            print(f"started {s.name:<19} pid {s.proc.pid} on {s.url}", flush=True)
        by_name = {s.name: s for s in servers}
        if args.warmup > 0:
            _warm_up(r, by_name, args)
        stamp = int(time.time())
        runs += _rounds(r, by_name, "update", args, lambda rnd, name: f"{stamp}-{rnd}-{name}")
        for s in servers:
            seed_status_jobs(s.url, args.jobs)
        print(f"created jobs s-1..s-{args.jobs} on each server for the status runs", flush=True)
        runs += _rounds(r, by_name, "status", args, lambda rnd, name: "")
    finally:
        stop(servers)
        for s in servers:
            print(f"stopped {s.name} (pid {s.proc.pid}, exit {s.proc.returncode})", file=sys.stderr)
        try:
            r.flushdb()
        finally:
            r.close()

    result = report(runs, args)
    if args.json:
        _write_json(args.json, result, runs)
    return 0


def _warm_up(r: redis.Redis, by_name: dict[str, Server], args: argparse.Namespace) -> None:
    for name in ORDER:
        run_wrk(
            by_name[name].url,
            UPDATE_LUA,
            duration=args.warmup,
            connections=args.connections,
            script_args=[f"w-{name}"],
        )
    time.sleep(0.5)  # requests in flight when wrk stopped
    r.flushdb()


def _rounds(
    r: redis.Redis,
    by_name: dict[str, Server],
    scenario: str,
    args: argparse.Namespace,
    tag: Callable[[int, str], str],
) -> list[Run]:
    """``args.rounds`` rounds of ``scenario`` over every server, in an order rotated each round."""
    runs = []
    for rnd in range(1, args.rounds + 1):
        for name in rotated(ORDER, rnd):
            run = measure(
                r,
                by_name[name],
                scenario,
                rnd,
                duration=args.duration,
                connections=args.connections,
                jobs=args.jobs,
                tag=tag(rnd, name),
            )
            runs.append(run)
            print(
                f"round {rnd} {scenario} {name:<19} {run.wrk.rps:>8.1f} req/s  p50 {run.wrk.p50_ms:6.2f} ms  "
                f"p99 {run.wrk.p99_ms:6.2f} ms  {' '.join(run.notes)}",
                flush=True,
            )
            if args.raw:
                print(run.wrk.raw)
    return runs


def _write_json(path: Path, result: dict[str, Any], runs: list[Run]) -> None:
    result["runs"] = [
        {
            "server": x.server,
            "scenario": x.scenario,
            "round": x.round,
            **x.wrk.summary(),
            "processed": x.processed,
            "cpu_us_per_request": x.cpu_us_per_request,
            "cpu_util": x.cpu_util,
            "client_commands": x.client_commands(),
        }
        for x in runs
    ]
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
