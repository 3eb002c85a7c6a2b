"""`orchestrator demo`: simulated data holders run a secure sum end to end, and the decoded result is
printed next to the plaintext truth computed from the same rows. With dropouts, some holders stop after a
round; the job completes over the others (k of n) and the truth is computed from exactly its contributors."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from typing import Any

from orchestrator.client import OrchestratorClient
from orchestrator.securesum.participant import STOP_POINTS, submit_statistics
from orchestrator.security.tokens import issue_token

# How long each round of a demo with dropouts waits for the holders it expects (seconds).
DROP_ROUND_TIMEOUT = 5.0
DROP_POINTS = (*STOP_POINTS, "mixed")

SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "income", "dataType": "NUMERIC", "bounds": [0, 250000]},
    {"name": "visits", "dataType": "NUMERIC", "bounds": [0, 365]},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "bloodType", "dataType": "NOMINAL", "categories": ["A", "B", "AB", "O"]},
    {"name": "region", "dataType": "CATEGORICAL", "categories": ["north", "south", "east", "west"]},
]


def synthetic_rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Plausible rows with a few missing values."""
    rows = []
    for _ in range(count):
        rows.append(
            {
                "age": None if rng.random() < 0.03 else round(min(max(rng.gauss(45, 15), 0), 120), 1),
                "income": round(min(rng.lognormvariate(10.5, 0.5), 250000)),
                "visits": rng.randint(0, 30),
                "smoker": None if rng.random() < 0.05 else rng.random() < 0.22,
                "bloodType": rng.choices(["A", "B", "AB", "O"], weights=[42, 10, 4, 44])[0],
                "region": rng.choice(["north", "south", "east", "west"]),
            }
        )
    return rows


def plaintext_truth(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The statistics computed directly from every row, as a trusted party holding all the data would."""
    truth: dict[str, dict[str, Any]] = {}
    for feature in SCHEMA:
        values = [row[feature["name"]] for row in rows if row[feature["name"]] is not None]
        if feature["dataType"] == "NUMERIC":
            truth[feature["name"]] = {
                "count": len(values),
                "sum": sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values),
            }
        elif feature["dataType"] == "BOOLEAN":
            truth[feature["name"]] = {"aggregatedNotNull": len(values), "aggregatedTrue": sum(values)}
        else:
            counts = {c: values.count(c) for c in feature["categories"]}
            truth[feature["name"]] = {"aggregatedNotNull": len(values), **counts}
    return truth


def _decoded(feature: dict[str, Any]) -> dict[str, Any]:
    if feature["dataType"] == "NUMERIC":
        return {k: feature[k] for k in ("count", "sum", "mean", "std")}
    if feature["dataType"] == "BOOLEAN":
        return {k: feature[k] for k in ("aggregatedNotNull", "aggregatedTrue")}
    return {"aggregatedNotNull": feature["aggregatedNotNull"], **feature["categoryCounts"]}


def compare(result: list[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
    """Report lines, and whether every statistic matches (counts exactly, the rest to 1e-9 relative)."""
    lines = [f"{'feature':<10} {'statistic':<18} {'secure sum':>18} {'plaintext':>18}  match"]
    all_match = True
    for feature in result:
        for name, value in _decoded(feature).items():
            expected = truth[feature["featureName"]][name]
            if isinstance(expected, int) and not isinstance(expected, bool):
                ok = value == expected
            else:
                ok = math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9)
            all_match &= ok
            mark = "yes" if ok else "NO"
            lines.append(f"{feature['featureName']:<10} {name:<18} {_fmt(value):>18} {_fmt(expected):>18}  {mark}")
    return lines, all_match


def _fmt(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def plan_drops(holders: list[str], drop: int, drop_at: str, rng: random.Random) -> dict[str, str]:
    """Which holders drop out, and after which round (STOP_POINTS; "mixed": spread over them in turn)."""
    chosen = sorted(rng.sample(holders, drop))
    rounds = STOP_POINTS if drop_at == "mixed" else (drop_at,)
    return {holder: rounds[n % len(rounds)] for n, holder in enumerate(chosen)}


def min_clients_for(clients: int, drop: int) -> int | None:
    """minClients for a job that survives ``drop`` of ``clients`` holders dropping out (every other one),
    or None when too few would be left: the secure sum's threshold must be above half the clients."""
    survivors = clients - drop
    return survivors if 2 * survivors > clients else None


async def run_demo(
    url: str,
    *,
    clients: int,
    rows: int,
    seed: int | None = None,
    secret: str | None = None,
    claims: dict[str, str] | None = None,
    drop: int = 0,
    drop_at: str = "mixed",
    round_timeout: float | None = None,
) -> bool:
    """Run the demo against the service at ``url``; True when the secure sum matches the plaintext truth of
    its contributors' rows. With ``secret`` (the service's AUTH_JWT_SECRET) each holder gets a client token
    of its own, with the ``claims`` (iss, aud) the service checks. With ``drop``, that many holders stop
    after the round ``drop_at`` names (min_clients_for must allow it) and each round waits ``round_timeout``
    seconds for them (5 by default)."""
    claims = claims or {}
    rng = random.Random(seed)
    job_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{rng.randrange(16**4):04x}"
    data = {f"holder-{i + 1:02d}": synthetic_rows(random.Random(rng.random()), rows) for i in range(clients)}
    stops = plan_drops(sorted(data), drop, drop_at, rng)
    min_clients = min_clients_for(clients, drop) if drop else None
    if drop and min_clients is None:
        raise ValueError(f"{drop} of {clients} holders cannot drop out: a secure sum needs more than half of them")
    if drop and round_timeout is None:
        round_timeout = DROP_ROUND_TIMEOUT
    print(f"Job {job_id}: {clients} data holders x {rows} rows, aggregated with the built-in secure sum")
    if drop:
        print(
            f"{drop} of them drop out ({', '.join(f'{h} after {r}' for h, r in stops.items())}): minClients "
            f"{min_clients}, each round waits {round_timeout:g} s for the holders it expects"
        )
    print(f"Follow it live: {url}/dashboard")
    viewer = issue_token(secret, "demo-viewer", "viewer", 86400, [job_id], **claims) if secret else None
    if viewer:
        print(f"Authentication is on: the dashboard asks for a token; this viewer token shows the job:\n  {viewer}")
    started = time.perf_counter()
    # A holder that waits for every round may wait out each one's timeout for the dropped.
    timeout = 120 + 4 * (round_timeout or 0)

    async def holder(client_id: str) -> dict[str, Any]:
        token = issue_token(secret, client_id, "client", 3600, [job_id], **claims) if secret else None
        async with OrchestratorClient(url, token=token) as client:
            return await submit_statistics(
                client,
                job_id,
                client_id,
                clients,
                SCHEMA,
                data[client_id],
                wait=client_id not in stops,
                timeout=timeout,
                min_clients=min_clients,
                round_timeout=round_timeout,
                stop_after=stops.get(client_id),
            )

    results = await asyncio.gather(*(holder(client_id) for client_id in data))
    final = next(r for r in results if not r.get("stoppedAfter"))
    if final.get("status") != "COMPLETED":
        print(f"The job did not complete: {final.get('status')}: {final.get('failureReason') or final.get('message')}")
        return False
    print(f"Completed in {time.perf_counter() - started:.2f} s. The service saw only masked vectors.\n")
    contributors = list(final.get("contributors") or data)
    if stops:
        async with OrchestratorClient(url, token=viewer) as client:
            job = await client.job(job_id)
        print("\n".join(drop_lines(stops, job["participation"]["dropped"], contributors)) + "\n")
    truth = plaintext_truth([row for holder_id in contributors for row in data[holder_id]])
    lines, ok = compare(final["aggregatedResults"], truth)
    print("\n".join(lines))
    print("\nEvery statistic matches the plaintext truth." if ok else "\nSOME STATISTICS DO NOT MATCH.")
    print(f"Result: {url}/api/job-status/{job_id}   Dashboard: {url}/dashboard")
    return ok


def drop_lines(stops: dict[str, str], dropped: list[dict[str, str]], contributors: list[str]) -> list[str]:
    """Who stopped after which round, where the service dropped it, and whose rows the result holds."""
    at = {entry["clientId"]: entry["round"] for entry in dropped}
    lines = []
    for holder_id, stop in stops.items():
        if holder_id in contributors:
            # It sent its input and skipped only the unmask round: the others' shares of its seed unmask it.
            what = "its input counts (the other holders' shares of its self-mask seed removed its mask)"
        elif holder_id in at:
            what = f"dropped by the service at the {at[holder_id]} round; its input is not in the result"
        else:
            what = "its input is not in the result"
        lines.append(f"  {holder_id} stopped after the {stop} round: {what}")
    lines.append(
        f"The result is over {len(contributors)} contributors ({', '.join(contributors)}); "
        "the plaintext truth below is computed from exactly their rows."
    )
    return ["Dropped out:", *lines]
