"""`orchestrator submit` and `orchestrator demo`, run as the user would run them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from orchestrator.securesum.demo import run_demo
from orchestrator.securesum.masking import encode_key, public_key_bytes
from orchestrator.typedefs import STORE
from tests.support import REPO, free_port

SCHEMA = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]


def public_keys(kept: dict[str, Any]) -> tuple[str, str]:
    """The two public keys (mask agreement, share encryption) of a key file's private ones, as registered."""

    def public(name: str) -> str:
        return encode_key(public_key_bytes(X25519PrivateKey.from_private_bytes(base64.b64decode(kept[name]))))

    return public("privateKey"), public("encryptionKey")


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
    # The key file is bound to the job instance its keys were registered with, and holds both keys and
    # the self-mask seed; no round after the keys one was reached.
    assert (kept["jobId"], kept["instanceId"]) == ("cli-3", keys["instanceId"])
    assert [(e["publicKey"], e["encryptionKey"]) for e in keys["keys"]] == [public_keys(kept)]
    assert len(base64.b64decode(kept["selfMaskSeed"])) == 16
    assert (kept["posted"], kept["received"], kept["answered"], kept["statistics"]) == ({}, {}, None, None)
    # Rerun with the same key file: the same key, so the round accepts it again and the job completes.
    again, other = await asyncio.gather(
        run("submit", "--client", "a", "--key-file", str(key_file), "--wait", "--timeout", "30", *common),
        run("submit", "--client", "b", "--wait", "--timeout", "30", *common),
    )
    assert again[0] == 0 and other[0] == 0, again[2] + other[2]
    final = json.loads(again[1])
    assert final["status"] == "COMPLETED"
    assert final["aggregatedResults"][0]["count"] == 2
    assert final["contributors"] == ["a", "b"]
    # Every step was kept: the bundles posted to a and b, theirs received, the unmask split answered.
    done = json.loads(key_file.read_text())
    assert (done["privateKey"], done["encryptionKey"], done["selfMaskSeed"]) == (
        kept["privateKey"],
        kept["encryptionKey"],
        kept["selfMaskSeed"],
    )
    assert sorted(done["posted"]) == sorted(done["received"]) == ["a", "b"]
    assert done["answered"] == {"survivors": ["a", "b"], "dropped": []}
    assert done["statistics"] is not None
    # The job expires and its id is used again: the kept key refuses the new instance, before sending anything.
    await client.app[STORE].expire_stale(now=10**15)
    other_key = tmp_path / "b.key"
    code, _, _ = await run("submit", "--client", "b", "--key-file", str(other_key), "--timeout", "1.5", *common)
    assert code == 1
    code, _, err = await run("submit", "--client", "a", "--key-file", str(key_file), "--timeout", "5", *common)
    assert code == 2 and "another instance" in err, err
    keys = await (await client.get("/api/jobs/cli-3/keys")).json()
    assert [k["clientId"] for k in keys["keys"]] == ["b"]


def write_inputs(tmp_path: Path, rows: dict[str, str]) -> tuple[Path, dict[str, Path]]:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    files = {}
    for name, body in rows.items():
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_text("age,smoker,blood\n" + body)
    return schema, files


async def test_submit_k_of_n_completes_over_the_clients_that_came(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """2 of 3 (--min-clients): c never comes; the keys round closes after --round-timeout, and the job
    completes over a and b. An ISO --deadline is taken."""
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.1)
    url = str(client.make_url("")).rstrip("/")
    schema, files = write_inputs(tmp_path, {"a": "30,true,A\n", "b": "50,false,O\n70,,B\n"})
    when = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    deadline = when.isoformat()
    common = ["--job", "cli-k", "--total", "3", "--schema", str(schema), "--url", url, "--wait", "--timeout", "30"]
    common += ["--min-clients", "2", "--round-timeout", "1.5", "--deadline", deadline]
    outcomes = await asyncio.gather(
        *(run("submit", "--client", name, "--csv", str(path), *common) for name, path in files.items())
    )
    for code, out, err in outcomes:
        assert code == 0, err
        final = json.loads(out)
        assert (final["status"], final["contributors"], final["missingCount"]) == ("COMPLETED", ["a", "b"], 1)
    assert (final["aggregatedResults"][0]["count"], final["aggregatedResults"][0]["sum"]) == (3, 150)
    job = await (await client.get("/api/jobs/cli-k")).json()
    assert job["minClients"] == 2
    assert job["participation"]["dropped"] == []  # c never registered: it is missing, not dropped


async def test_submit_iso_deadline_is_the_jobs(make_client: Callable[..., Any], tmp_path: Path) -> None:
    client = await make_client()
    url = str(client.make_url("")).rstrip("/")
    schema, files = write_inputs(tmp_path, {"a": "30,true,A\n"})
    when = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    code, _, _ = await run(
        "submit", "--job", "cli-iso", "--client", "a", "--total", "3", "--schema", str(schema),
        "--csv", str(files["a"]), "--url", url, "--deadline", when.isoformat(), "--timeout", "1",
    )  # fmt: skip
    assert code == 1  # timed out waiting for the others
    job = await (await client.get("/api/jobs/cli-iso")).json()
    assert job["deadline"] == when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def test_submit_deadline_in_seconds_closes_the_round_early(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """--deadline 1.5 (seconds from now) closes the keys round long before its --round-timeout."""
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.1)
    url = str(client.make_url("")).rstrip("/")
    schema, files = write_inputs(tmp_path, {"a": "30,true,A\n", "b": "50,false,O\n"})
    common = ["--job", "cli-d", "--total", "3", "--schema", str(schema), "--url", url, "--wait", "--timeout", "30"]
    common += ["--min-clients", "2", "--round-timeout", "600", "--deadline", "1.5"]
    outcomes = await asyncio.gather(
        *(run("submit", "--client", name, "--csv", str(path), *common) for name, path in files.items())
    )
    for code, out, err in outcomes:
        assert code == 0, err
        assert json.loads(out)["contributors"] == ["a", "b"]


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (["--min-clients", "0"], "--min-clients: must be at least 1"),
        (["--min-clients", "two"], "--min-clients: not a whole number"),
        (["--round-timeout", "-1"], "--round-timeout: must be a number of seconds above 0"),
        (["--round-timeout", "nan"], "--round-timeout: must be a number of seconds above 0"),
        (["--deadline", "tomorrow"], "--deadline: not an ISO 8601 time or a number of seconds from now"),
        (["--deadline", "0"], "--deadline: must be a number of seconds above 0"),
        (["--aggregation", "sum", "--min-clients", "2"], "--min-clients: for --aggregation secure-sum only"),
    ],
)
async def test_submit_refuses_bad_participation_flags(
    make_client: Callable[..., Any], tmp_path: Path, flags: list[str], refusal: str
) -> None:
    client = await make_client()
    url = str(client.make_url("")).rstrip("/")
    schema, files = write_inputs(tmp_path, {"a": "30,true,A\n"})
    code, _, err = await run(
        "submit", "--job", "cli-bad", "--client", "a", "--total", "3", "--schema", str(schema),
        "--csv", str(files["a"]), "--url", url, *flags,
    )  # fmt: skip
    assert code == 2 and refusal in err, err
    assert (await client.get("/api/jobs/cli-bad")).status == 404


async def test_submit_reports_a_threshold_the_service_refuses(make_client: Callable[..., Any], tmp_path: Path) -> None:
    """1 of 2 is no majority: the secure sum would reveal the one input; the service refuses the job."""
    client = await make_client()
    url = str(client.make_url("")).rstrip("/")
    schema, files = write_inputs(tmp_path, {"a": "30,true,A\n"})
    code, _, err = await run(
        "submit", "--job", "cli-t", "--client", "a", "--total", "2", "--min-clients", "1", "--schema", str(schema),
        "--csv", str(files["a"]), "--url", url,
    )  # fmt: skip
    assert code == 1 and "400 threshold_too_low" in err, err


async def test_submit_help_states_the_defaults() -> None:
    code, out, _ = await run("submit", "--help")
    assert code == 0
    text = " ".join(out.split())
    for default in (
        "(default: --total, every client)",
        "(default: the service's SECURE_SUM_ROUND_TIMEOUT, 300)",
        "(default: none, the job waits for its clients or its round timeouts)",
    ):
        assert default in text, text


async def test_demo_with_dropouts_on_the_embedded_service(tmp_path: Path) -> None:
    """3 of 7 holders drop out, one after each round; the result over the others matches the plaintext
    statistics of exactly the contributors (the one that sent its input among them)."""
    env = {"RESULTS_SAVE_PATH": str(tmp_path / "results"), "LOG_DIR": str(tmp_path / "logs")}
    code, out, err = await run(
        "demo", "--clients", "7", "--rows", "50", "--seed", "3", "--drop", "3", "--round-timeout", "1.5",
        "--port", str(free_port()), "--exit", env=env,
    )  # fmt: skip
    assert code == 0, out + err
    assert "Every statistic matches the plaintext truth." in out
    assert "minClients 4, each round waits 1.5 s" in out
    stopped = dict(re.findall(r"(holder-\d\d) stopped after the (\w+) round", out))
    assert sorted(stopped.values()) == ["inputs", "keys", "shares"], out
    keys, shares, inputs = (next(h for h, r in stopped.items() if r == stop) for stop in ("keys", "shares", "inputs"))
    assert f"{keys} stopped after the keys round: dropped by the service at the shares round" in out
    assert f"{shares} stopped after the shares round: dropped by the service at the inputs round" in out
    assert f"{inputs} stopped after the inputs round: its input counts" in out
    contributors = re.search(r"The result is over 5 contributors \(([^)]*)\)", out)
    assert contributors, out
    assert contributors[1].split(", ") == sorted({f"holder-{i:02d}" for i in range(1, 8)} - {keys, shares})


@pytest.mark.parametrize("drop_at", ["keys", "inputs"])
async def test_demo_drops_at_one_round_against_a_service(
    make_client: Callable[..., Any], capsys: pytest.CaptureFixture[str], drop_at: str
) -> None:
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.1)
    url = str(client.make_url("")).rstrip("/")
    assert await run_demo(url, clients=5, rows=30, seed=1, drop=2, drop_at=drop_at, round_timeout=1.5)
    out = capsys.readouterr().out
    assert out.count(f"stopped after the {drop_at} round") == 2, out
    assert f"over {5 if drop_at == 'inputs' else 3} contributors" in out
    assert "Every statistic matches the plaintext truth." in out


@pytest.mark.parametrize(("clients", "drop", "most"), [(4, 2, 1), (5, 3, 2), (2, 1, 0), (5, -1, 2)])
async def test_demo_refuses_dropouts_the_secure_sum_cannot_survive(clients: int, drop: int, most: int) -> None:
    code, _, err = await run("demo", "--clients", str(clients), "--drop", str(drop), "--exit")
    assert code == 2
    assert f"so --drop may be 0-{most}" in err, err
