"""`orchestrator submit` and `orchestrator demo`, run as the user would run them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.typedefs import STORE
from tests.support import REPO, free_port

SCHEMA = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_submit_from_csv_files(make_client: Callable[..., Any], tmp_path: Path) -> None:
    client = await make_client(aggregation_workers=1)
    url = str(client.make_url("")).rstrip("/")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    files = []
    for name, body in [
        ("a", "age,smoker,blood\n30.5,true,A\n41,false,O\n"),
        ("b", "age,smoker,blood\n,yes,B\n60.25,,\n"),
    ]:
        path = tmp_path / f"{name}.csv"
        path.write_text(body)
        files.append(path)
    common = ["--job", "cli-1", "--total", "2", "--schema", str(schema), "--url", url, "--wait", "--timeout", "30"]
    outcomes = await asyncio.gather(
        run("submit", "--client", "a", "--csv", str(files[0]), *common),
        run("submit", "--client", "b", "--csv", str(files[1]), *common),
    )
    for code, out, err in outcomes:
        assert code == 0, err
        final = json.loads(out)
        assert final["status"] == "COMPLETED"
    age, smoker, blood = final["aggregatedResults"]
    assert (age["count"], age["sum"]) == (3, 30.5 + 41 + 60.2)  # 60.25 kept to one decimal (half to even)
    assert (smoker["aggregatedNotNull"], smoker["aggregatedTrue"]) == (3, 2)
    assert blood["categoryCounts"] == {"A": 1, "B": 1, "O": 1}


async def test_submit_refuses_what_could_overflow_or_does_not_fit(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await make_client()
    url = str(client.make_url("")).rstrip("/")
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps([{"name": "x", "dataType": "NUMERIC", "bounds": [0, 1e8], "scale": 3}]))
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps(SCHEMA))
    rows = tmp_path / "rows.csv"
    rows.write_text("x,age,smoker,blood\n5,200,,\n")
    # A schema whose sums could overflow; then rows beyond the bounds of one that cannot.
    for schema, refusal in [(wide, "overflow"), (narrow, "outside the declared bounds")]:
        code, _, err = await run(
            "submit", "--job", "cli-2", "--client", "a", "--total", "2",
            "--schema", str(schema), "--csv", str(rows), "--url", url,
        )  # fmt: skip
        assert code == 2
        assert refusal in err
    assert (await client.get("/api/jobs/cli-2")).status == 404


@pytest.mark.parametrize(
    ("secret", "bound"),
    [(None, False), ("demo-secret-for-the-test-0123456789ab", False), ("demo-secret-for-the-test-0123456789ab", True)],
)
async def test_demo_runs_end_to_end_on_the_embedded_service(tmp_path: Path, secret: str | None, bound: bool) -> None:
    """With AUTH_JWT_SECRET the holders use client tokens scoped to the job, as real ones would; with an
    issuer and an audience configured, the tokens carry them."""
    port = free_port()
    env = {"RESULTS_SAVE_PATH": str(tmp_path / "results"), "LOG_DIR": str(tmp_path / "logs")}
    if secret:
        env["AUTH_JWT_SECRET"] = secret
    if bound:
        env.update({"AUTH_JWT_ISSUER": "https://issuer.example", "AUTH_JWT_AUDIENCE": "orchestrator"})
    code, out, err = await run(
        "demo", "--clients", "3", "--rows", "200", "--seed", "3", "--port", str(port), "--exit", env=env
    )
    assert code == 0, out + err
    assert "Every statistic matches the plaintext truth." in out
    assert f"http://127.0.0.1:{port}/dashboard" in out
    assert ("this viewer token shows the job" in out) == bool(secret)


async def test_submit_with_a_key_file_can_rejoin_after_a_failure(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await make_client(aggregation_workers=1)
    url = str(client.make_url("")).rstrip("/")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    rows = tmp_path / "rows.csv"
    rows.write_text("age,smoker,blood\n30,true,A\n")
    key_file = tmp_path / "a.key"
    common = ["--job", "cli-3", "--total", "2", "--schema", str(schema), "--csv", str(rows), "--url", url]
    # Alone, a gives up waiting for the key round: its key stays registered.
    code, _, err = await run("submit", "--client", "a", "--key-file", str(key_file), "--timeout", "1.5", *common)
    assert code == 1 and "timed out" in err
    assert key_file.stat().st_mode & 0o777 == 0o600
    kept = json.loads(key_file.read_text())
    keys = await (await client.get("/api/jobs/cli-3/keys")).json()
    # The key file is bound to the job instance its key was registered with.
    assert (kept["jobId"], kept["instanceId"]) == ("cli-3", keys["instanceId"])
    # Rerun with the same key file: the same key, so the round accepts it again and the job completes.
    again, other = await asyncio.gather(
        run("submit", "--client", "a", "--key-file", str(key_file), "--wait", "--timeout", "30", *common),
        run("submit", "--client", "b", "--wait", "--timeout", "30", *common),
    )
    assert again[0] == 0 and other[0] == 0, again[2] + other[2]
    final = json.loads(again[1])
    assert final["status"] == "COMPLETED"
    assert final["aggregatedResults"][0]["count"] == 2
    # The job expires and its id is used again: the kept key refuses the new instance, before sending anything.
    await client.app[STORE].expire_stale(now=10**15)
    other_key = tmp_path / "b.key"
    code, _, _ = await run("submit", "--client", "b", "--key-file", str(other_key), "--timeout", "1.5", *common)
    assert code == 1
    code, _, err = await run("submit", "--client", "a", "--key-file", str(key_file), "--timeout", "5", *common)
    assert code == 2 and "another instance" in err, err
    keys = await (await client.get("/api/jobs/cli-3/keys")).json()
    assert [k["clientId"] for k in keys["keys"]] == ["b"]
