"""Test helpers: free ports, service subprocesses, a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(url: str, *, within: float = 15.0, status: int = 200) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer {status} within {within}s")
            await asyncio.sleep(0.05)


class ServiceProcess:
    """`python -m orchestrator serve` in a subprocess, stopped by its PID."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        full_env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "REDIS_HOST", "REDIS_PORT"}}
        full_env.update(
            {
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "LOG_DIR": str(log_dir),
                "RESULTS_SAVE_PATH": str(log_dir / "results"),
                **env,
            }
        )
        self.stderr_path = log_dir / f"stderr-{self.port}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve"],
            env=full_env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    async def ready(self, path: str = "/healthz") -> ServiceProcess:
        await wait_until(self.base + path)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def service_instances(env: dict[str, str], tmp_path: Path, count: int = 2) -> AsyncIterator[list[ServiceProcess]]:
    """``count`` `orchestrator serve` processes with ``env`` (sharing its Redis), ready, stopped afterwards."""
    instances = [ServiceProcess(env, tmp_path / f"i{n}") for n in range(count)]
    try:
        await asyncio.gather(*(instance.ready("/readyz") for instance in instances))
        yield instances
    finally:
        for instance in instances:
            instance.stop()


class RedisServerProcess:
    """A private redis-server on its own port, persisting every write (appendfsync always), so a
    test may kill and restart it without losing acknowledged writes."""

    def __init__(self, data_dir: Path, *extra_args: str) -> None:
        self.extra_args = extra_args
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.data_dir),
                "--logfile",
                str(self.data_dir / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (with or without requirepass)
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


async def fill_to_maxmemory(url: str, maxmemory: str = "1mb") -> int:
    """Make the PRIVATE Redis at ``url`` refuse writes the way a full one does (OOM): cap it at ``maxmemory``
    with no eviction and write filler keys until it refuses one; returns how many it took. CONFIG SET
    maxmemory 0 lifts it."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", maxmemory)
        for n in range(10_000):
            try:
                await client.set(f"filler:{n}", "x" * 16_384)
            except OutOfMemoryError:
                return n
        raise RuntimeError(f"Redis at {url} took 10,000 filler keys without refusing one")
    finally:
        await client.aclose()


# The schemas real clients send (detailed) and the one the original README shows (short).
DETAILED_SCHEMA = [
    {
        "featureName": "age",
        "dataType": "NUMERIC",
        "offset": 0,
        "length": 7,
        "fields": ["numOfNotNull", "min", "max", "avg", "q1", "q2", "q3"],
    },
    {
        "featureName": "isActive",
        "dataType": "BOOLEAN",
        "offset": 7,
        "length": 2,
        "fields": ["numOfNotNull", "numOfTrue"],
    },
    {"featureName": "department", "dataType": "NOMINAL", "offset": 9, "length": 1, "fields": ["numOfNotNull"]},
]
SHORT_SCHEMA = [{"name": "age", "dataType": "NUMERIC"}, {"name": "isActive", "dataType": "BOOLEAN"}]


async def final_status(client: Any, job: str, within: float = 10.0) -> dict[str, Any]:
    for _ in range(int(within / 0.05)):
        status = await (await client.get(f"/api/job-status/{job}")).json()
        if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job} did not finish: {status}")


def new_keys() -> dict[str, str]:
    """A key registration's two public keys (mask agreement, share encryption), fresh."""
    from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes

    return {
        "publicKey": encode_key(public_key_bytes(generate_private_key())),
        "encryptionKey": encode_key(public_key_bytes(generate_private_key())),
    }
