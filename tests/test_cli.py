"""The entry points as a user runs them: `orchestrator serve` on the embedded default, bad settings, logs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from orchestrator.cli import main
from tests.support import REPO, ServiceProcess

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\[[\w.-]+\] \[computations-orchestrator\] .+"
)


def test_bad_setting_stops_with_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve"],
        env={"PATH": "/usr/bin:/bin", "PORT": "not-a-port", "LOG_DIR": str(tmp_path)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "orchestrator: configuration error: PORT: must be an integer 1-65535, got 'not-a-port'"
    ]


def test_console_script_and_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("orchestrator ")


async def test_serve_on_embedded_default_logs_in_the_original_format(tmp_path: Path) -> None:
    service = ServiceProcess({}, tmp_path / "logs")
    try:
        await service.ready("/readyz")
        async with aiohttp.ClientSession() as session:
            body = {"jobId": "test_123", "clientId": "client_1", "totalClients": 1}
            async with session.post(f"{service.base}/api/update", json=body) as resp:
                assert resp.status == 200
            # The default backend is `none` (no coordinator configured): the job completes at once.
            for _ in range(100):
                async with session.get(f"{service.base}/api/job-status/test_123") as resp:
                    status = await resp.json()
                if status["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.05)
            assert status["status"] == "COMPLETED"
            assert status["jobInfo"]["finalResult"]["clientList"] == ["client_1"]
            async with session.post(
                f"{service.base}/api/update", data=b"{", headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400
    finally:
        service.stop()
    log = (tmp_path / "logs" / "computations-orchestrator.log").read_text()
    lines = log.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), log
    assert "WARNING [connections] [computations-orchestrator] No REDIS_URL set: using an embedded" in log
    assert "starting with {" in log and "embedded fakeredis" in log
    assert "[api] [computations-orchestrator] Job test_123 created (totalClients=1); Client client_1 done" in log
    assert "Client client_1 done for job test_123 (doneCount=1/1)" in log
    assert "Job test_123: all 1 clients done; moved to AGGREGATING" in log
    assert "Job test_123 aggregated and COMPLETED in" in log
    assert re.search(r"\[access\] \[computations-orchestrator\] POST /api/update 200 \d+\.\dms", log)
    assert re.search(r"\[access\] \[computations-orchestrator\] POST /api/update 400 \d+\.\dms", log)
    assert "WARNING [access]" not in log
    assert "WARNING [http] [computations-orchestrator] POST /api/update -> 400 invalid_json: Malformed JSON" in log
    assert "Redis reachable at embedded fakeredis" in log
    assert service.stderr().count("Job test_123 created") == 1


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def logged(service: ServiceProcess, text: str) -> None:
    """Wait for ``text`` in the service's log (lines are written in batches)."""
    for _ in range(100):
        if text in service.stderr():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not logged: {service.stderr()[-500:]}")


def test_refuses_a_public_address_without_authentication(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", env={"LOG_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "--insecure-no-auth" in result.stderr


async def test_insecure_no_auth_starts_and_warns(tmp_path: Path) -> None:
    service = ServiceProcess({"HOST": "0.0.0.0", "INSECURE_NO_AUTH": "true"}, tmp_path)
    try:
        await service.ready()
        await logged(service, "AUTHENTICATION IS OFF and the service listens on 0.0.0.0")
    finally:
        service.stop()


async def test_loopback_without_authentication_says_so(tmp_path: Path) -> None:
    service = ServiceProcess({}, tmp_path)
    try:
        await service.ready()
        await logged(service, "Authentication is off: listening on 127.0.0.1 (loopback) only")
    finally:
        service.stop()


def test_token_command_issues_tokens_the_service_accepts(tmp_path: Path) -> None:
    secret = "a-secret-of-at-least-thirty-two-bytes!"
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    result = run_cli(
        "token",
        "--role",
        "client",
        "--sub",
        "client_A",
        "--ttl",
        "2h",
        "--jobs",
        "study-*,trial-1",
        env={"AUTH_JWT_SECRET_FILE": str(secret_file)},
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["sub"], claims["role"], claims["jobs"]) == ("client_A", "client", ["study-*", "trial-1"])
    assert 7190 <= claims["exp"] - claims["iat"] <= 7200
    refused = run_cli("token", "--role", "client", "--sub", "x", env={})
    assert refused.returncode == 2 and "AUTH_JWT_SECRET" in refused.stderr
    short = run_cli("token", "--role", "client", "--sub", "x", env={"AUTH_JWT_SECRET": "short"})
    assert short.returncode == 2 and "at least 32 bytes" in short.stderr


async def test_token_command_sets_the_issuer_and_audience_the_service_checks(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "a-secret-of-at-least-thirty-two-bytes!"
    checks = {"auth_jwt_issuer": "https://idp.example", "auth_jwt_audience": "orchestrator"}
    monkeypatch.setenv("AUTH_JWT_SECRET", secret)
    monkeypatch.setenv("AUTH_JWT_ISSUER", checks["auth_jwt_issuer"])
    monkeypatch.setenv("AUTH_JWT_AUDIENCE", checks["auth_jwt_audience"])
    assert main(["token", "--role", "viewer", "--sub", "ops", "--ttl", "1h"]) == 0
    issued = capsys.readouterr().out.strip()
    for configured in ({"auth_jwt_issuer": checks["auth_jwt_issuer"]}, checks):
        client = await make_client(auth_jwt_secret=secret, **configured)
        resp = await client.get("/api/jobs", headers={"Authorization": f"Bearer {issued}"})
        assert resp.status == 200, await resp.json()
    monkeypatch.delenv("AUTH_JWT_AUDIENCE")
    assert main(["token", "--role", "viewer", "--sub", "ops"]) == 0
    assert "aud" not in jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
