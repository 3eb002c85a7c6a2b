"""The dropout-tolerant secure sum through the HTTP API (fakeredis and the real Redis): every round, clients
dropping out at each of them, the threshold, and the result against the plaintext statistics of exactly
the contributors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.client import OrchestratorClient, OrchestratorError
from orchestrator.securesum.layout import VectorLayout
from orchestrator.securesum.participant import UnmaskRefused, check_unmask_request, submit_statistics
from orchestrator.typedefs import STORE

SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
    {"name": "blood", "dataType": "NOMINAL", "categories": ["A", "B", "O"]},
]
LENGTH = VectorLayout.from_schema(SCHEMA).length
ROWS: dict[str, list[dict[str, Any]]] = {
    "a": [{"age": 30, "smoker": True, "blood": "A"}, {"age": 50, "smoker": False, "blood": "O"}],
    "b": [{"age": 40, "smoker": False, "blood": "B"}],
    "c": [{"age": 20, "smoker": True, "blood": "O"}, {"age": 70, "blood": "A"}],
    "d": [{"age": 90, "smoker": True, "blood": "B"}],
}


def plaintext(clients: list[str]) -> dict[str, Any]:
    rows = [row for c in clients for row in ROWS[c]]
    ages = [r["age"] for r in rows]
    return {"ageSum": float(sum(ages)), "count": len(ages), "smokers": sum(1 for r in rows if r.get("smoker"))}


async def run_job(url: str, job: str, k: int, stops: dict[str, str | None], rounds: float = 2.0) -> dict[str, Any]:
    async with OrchestratorClient(url) as orchestrator:
        tasks = [
            submit_statistics(
                orchestrator,
                job,
                c,
                len(stops),
                SCHEMA,
                ROWS[c],
                min_clients=k,
                round_timeout=rounds,
                stop_after=stop,
                timeout=30,
            )
            for c, stop in stops.items()
        ]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, OrchestratorError)]
        assert not errors, errors
        return await orchestrator.wait_for_completion(job, timeout=30)


async def test_everyone_takes_part(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1)
    url = str(client.make_url("")).rstrip("/")
    final = await run_job(url, "all", 3, {"a": None, "b": None, "c": None})
    assert final["status"] == "COMPLETED", final
    age = final["aggregatedResults"][0]
    truth = plaintext(["a", "b", "c"])
    assert (age["sum"], age["count"]) == (truth["ageSum"], truth["count"])
    assert (final["contributors"], final["missingClients"], final["missingCount"]) == (["a", "b", "c"], [], 0)


@pytest.mark.parametrize("stop", ["keys", "shares", "inputs"])
async def test_one_client_drops_out(make_client: Callable[..., Any], stop: str) -> None:
    client = await make_client(aggregation_workers=1)
    url = str(client.make_url("")).rstrip("/")
    final = await run_job(url, f"drop-{stop}", 3, {"a": None, "b": None, "c": None, "d": stop})
    assert final["status"] == "COMPLETED", final
    contributors = ["a", "b", "c"] if stop != "inputs" else ["a", "b", "c", "d"]
    truth = plaintext(contributors)
    age = final["aggregatedResults"][0]
    assert (age["sum"], age["count"]) == (truth["ageSum"], truth["count"]), final
    assert final["contributors"] == contributors
    assert final["missingClients"] == ([] if stop == "inputs" else ["d"])
    assert final["missingCount"] == 4 - len(contributors)


@pytest.mark.parametrize(
    ("stops", "round_", "missing"),
    [
        ({"a": None, "b": None, "c": "never", "d": "never"}, "keys", "2 never registered a key"),
        ({"a": None, "b": None, "c": "keys", "d": "keys"}, "shares", "missing: c, d"),
        ({"a": None, "b": None, "c": "shares", "d": "shares"}, "inputs", "missing: c, d"),
    ],
)
async def test_a_round_with_fewer_than_k_fails_the_job_naming_it(
    make_client: Callable[..., Any], stops: dict[str, str | None], round_: str, missing: str
) -> None:
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.2)
    url = str(client.make_url("")).rstrip("/")
    taking_part = {c: s for c, s in stops.items() if s != "never"}
    async with OrchestratorClient(url) as orchestrator:
        outcomes = await asyncio.gather(
            *(
                submit_statistics(
                    orchestrator, "few", c, 4, SCHEMA, ROWS[c], min_clients=3, round_timeout=1, stop_after=s, timeout=30
                )
                for c, s in taking_part.items()
            ),
            return_exceptions=True,
        )
        final = await orchestrator.wait_for_completion("few", timeout=30)
    assert final["status"] == "FAILED"
    assert f"the {round_} round closed (timeout" in final["failureReason"] or round_ == "keys"
    assert f"at least 3 needed; {missing}" in final["failureReason"], final["failureReason"]
    assert all(isinstance(o, OrchestratorError) for c, o in zip(taking_part, outcomes, strict=True) if not stops[c])
    # Nothing of the protocol outlives the job.
    job = await (await client.get("/api/jobs/few")).json()
    assert job["participation"]["round"] == "done"


async def test_an_unmask_round_short_of_k_answers_fails(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.2)
    url = str(client.make_url("")).rstrip("/")
    async with OrchestratorClient(url) as orchestrator:
        await asyncio.gather(
            *(
                submit_statistics(
                    orchestrator,
                    "mute",
                    c,
                    3,
                    SCHEMA,
                    ROWS[c],
                    min_clients=2,
                    round_timeout=1,
                    stop_after=s,
                    timeout=30,
                )
                for c, s in {"a": None, "b": "inputs", "c": "inputs"}.items()
            ),
            return_exceptions=True,
        )
        final = await orchestrator.wait_for_completion("mute", timeout=30)
    assert final["status"] == "FAILED"
    assert (
        "the unmask round closed (timeout) with 1 of 3 clients (a); at least 2 needed; missing: b, c"
        in (final["failureReason"])
    )


class CuriousServer(OrchestratorClient):
    """A client whose unmask request has been tampered with: the server also asks for b's mask-key share,
    which with b's seed share would strip b's masks off its input."""

    async def unmask_request(self, job_id: str) -> dict[str, Any]:
        request = await super().unmask_request(job_id)
        return {**request, "dropped": [*request["dropped"], "b"]}


async def test_a_client_refuses_to_reveal_both_shares_of_one_peer(make_client: Callable[..., Any]) -> None:
    client = await make_client(aggregation_workers=1, aggregation_sweep_seconds=0.2)
    url = str(client.make_url("")).rstrip("/")
    async with CuriousServer(url) as curious, OrchestratorClient(url) as honest:
        outcomes = await asyncio.gather(
            submit_statistics(
                curious, "curious", "a", 3, SCHEMA, ROWS["a"], min_clients=2, round_timeout=1, timeout=30
            ),
            *(
                submit_statistics(honest, "curious", c, 3, SCHEMA, ROWS[c], min_clients=2, round_timeout=1, timeout=30)
                for c in "bc"
            ),
            return_exceptions=True,
        )
        final = await honest.wait_for_completion("curious", timeout=30)
    assert isinstance(outcomes[0], UnmaskRefused) and "both shares of b" in str(outcomes[0])
    posted = [e["clientId"] for e in await client.app[STORE].event_history("curious") if e["type"] == "unmask.posted"]
    assert sorted(posted) == ["b", "c"]  # a sent nothing
    # Its input is still in the sum: b and c rebuilt its seed.
    assert final["status"] == "COMPLETED" and final["contributors"] == ["a", "b", "c"]
    assert final["aggregatedResults"][0]["sum"] == plaintext(["a", "b", "c"])["ageSum"]


def test_the_unmask_request_check_refuses_every_unsafe_split() -> None:
    sharers = ["a", "b", "c", "d"]
    ok = {"survivors": ["a", "b", "c"], "dropped": ["d"]}
    assert check_unmask_request(ok, "a", sharers, 3, None) == (["a", "b", "c"], ["d"])
    refused = {
        "both shares of c": {"survivors": ["a", "b", "c"], "dropped": ["c", "d"]},
        "does not split": {"survivors": ["a", "b", "c"], "dropped": []},
        "itself as dropped": {"survivors": ["b", "c", "d"], "dropped": ["a"]},
        "the threshold is 3": {"survivors": ["a", "b"], "dropped": ["c", "d"]},
        "names no survivors": {"dropped": ["d"]},
    }
    for message, request in refused.items():
        with pytest.raises(UnmaskRefused, match=message):
            check_unmask_request(request, "a", sharers, 3, None)
    with pytest.raises(UnmaskRefused, match="differs from the one this client answered"):
        check_unmask_request(ok, "a", sharers, 3, {"survivors": ["a", "b", "c", "d"], "dropped": []})


async def test_a_late_input_from_a_dropped_client_is_refused_and_changes_nothing(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client(aggregation_workers=0)
    url = str(client.make_url("")).rstrip("/")
    async with OrchestratorClient(url) as orchestrator:
        runs = [
            asyncio.create_task(
                submit_statistics(
                    orchestrator, "late", c, 4, SCHEMA, ROWS[c], min_clients=3, round_timeout=30, stop_after=s
                )
            )
            for c, s in {"a": "inputs", "b": "inputs", "c": "inputs", "d": "keys"}.items()
        ]
        while (await client.get("/api/jobs/late/keys")).status == 404:  # noqa: ASYNC110 - polling the API
            await asyncio.sleep(0.05)
        await orchestrator.wait_for_round("late", "keys")
        await asyncio.sleep(0.2)
        await orchestrator.close_job("late")  # the shares round closes without d: d is dropped
        await asyncio.gather(*runs)
        rounds = await orchestrator.keys("late")
        assert rounds["round"] == "unmask"
        before = await (await client.get("/api/jobs/late")).json()
        vector = base64.b64encode(bytes(8 * LENGTH)).decode()
        body = {"jobId": "late", "clientId": "d", "totalClients": 4, "vector": vector}
        resp = await client.post("/api/update", json=body)
        assert (resp.status, (await resp.json())["error"]["code"]) == (409, "client_dropped")
        after = await (await client.get("/api/jobs/late")).json()
    assert after == before
    assert before["participation"]["dropped"] == [{"clientId": "d", "round": "shares"}]
