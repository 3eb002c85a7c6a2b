"""Aggregation attempts: taking a job's aggregation over (fencing off earlier attempts), the coordinator's
trigger and callback, and finishing the job with its result."""

from __future__ import annotations

import json
from typing import Any, cast

from orchestrator import scripts
from orchestrator.models import Attempt, JobStatus
from orchestrator.store.core import StoreCore, now_ms


class Attempts(StoreCore):
    async def start_attempt(self, job_id: str, worker: str) -> Attempt | None:
        """Take the job's aggregation over (a new attempt, fencing off the earlier ones), or None when
        the job is no longer AGGREGATING."""
        async with self.guard("start_attempt"):
            raw = await self.run(
                scripts.START_ATTEMPT,
                keys={
                    "job": self.keys.job(job_id),
                    "clients": self.keys.updated_clients(job_id),
                    "public_keys": self.keys.public_keys(job_id),
                },
                args={"worker": worker, "now_ms": now_ms()},
            )
        if not raw or not int(raw[0]):
            return None
        _, number, aggregating_at, triggered, backend, schema, total, count, *ids = raw
        contributors = sorted(ids[: int(count)])
        return Attempt(
            job_id=job_id,
            number=int(number),
            aggregating_at_ms=int(aggregating_at),
            triggered=bool(triggered),
            backend=backend or None,
            schema_json=schema or "",
            clients=contributors,
            total_clients=int(total) or len(contributors),
            missing=sorted(set(ids[int(count) :]) - set(contributors)),
        )

    async def mark_triggered(self, attempt: Attempt) -> bool:
        """Record that the coordinator has the job; False if the attempt no longer owns it."""
        async with self.guard("mark_triggered"):
            done = await self.run(
                scripts.MARK_TRIGGERED,
                keys={"job": self.keys.job(attempt.job_id)},
                args={"attempt": attempt.number, "now_ms": now_ms()},
            )
        return bool(done)

    async def prepare_trigger(self, attempt: Attempt, token: str) -> tuple[str, bool] | None:
        """Before triggering an external aggregator: the callback token to give it, and whether an earlier
        attempt got this far (so may have triggered it already); None if the attempt no longer owns the job."""
        async with self.guard("callback"):
            outcome, kept = await self.run(
                scripts.PREPARE_TRIGGER,
                keys={"job": self.keys.job(attempt.job_id)},
                args={"attempt": attempt.number, "token": token},
            )
        return None if int(outcome) == 0 else (str(kept), int(outcome) == 2)

    async def store_callback(self, job_id: str, token: str, result: dict[str, Any]) -> int:
        """Keep a coordinator's pushed result: 1 stored, 0 the job is not aggregating, -1 wrong token."""
        async with self.guard("callback"):
            return int(
                await self.run(
                    scripts.STORE_CALLBACK,
                    keys={"job": self.keys.job(job_id)},
                    args={"token": token, "result": json.dumps(result, allow_nan=False)},
                )
            )

    async def callback_result(self, job_id: str) -> dict[str, Any] | None:
        async with self.guard("callback"):
            raw = await self.redis.hget(self.keys.job(job_id), "coordinatorResult")
        return json.loads(raw) if raw else None

    async def aggregating_since(self, *, limit: int = 1000) -> dict[str, int]:
        """The AGGREGATING jobs (up to ``limit``) with the time each started aggregating (epoch ms)."""
        async with self.guard("aggregating"):
            ids = cast(
                list[str], await self.redis.zrange(self.keys.jobs_by_status(JobStatus.AGGREGATING), 0, limit - 1)
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(self.keys.job(job_id), "aggregatingAt")
                times = await pipe.execute()
        return {job_id: int(t) for job_id, t in zip(ids, times, strict=True) if t}

    async def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: Any = None,
        reason: str = "",
        attempt: int | None = None,
        aggregating_since: int | None = None,
    ) -> tuple[bool, int]:
        """Move an AGGREGATING job to COMPLETED (with its result) or FAILED (with a reason), announcing
        it; returns (whether this call did it, the job's version). Safe to call twice. With ``attempt``,
        only if that aggregation attempt still owns the job (fencing off a worker whose claim was taken
        over); with ``aggregating_since``, only if it has been aggregating since then or earlier."""
        if status not in (JobStatus.COMPLETED, JobStatus.FAILED):
            raise ValueError(f"a job finishes as COMPLETED or FAILED, not {status.value}")
        k = self.keys
        result_json = "" if result is None else json.dumps(result, separators=(",", ":"), allow_nan=False)
        async with self.guard("finish"):
            done, version = await self.run(
                scripts.FINISH,
                keys={
                    **k.job_keys(job_id),
                    "aggregating": k.jobs_by_status(JobStatus.AGGREGATING),
                    "finished": k.jobs_by_status(status),
                    "updated": k.jobs_by_updated,
                    "deliveries": k.deliveries(job_id),
                    "delivery_queue": k.delivery_queue,
                    "protocol": k.protocol_keys(job_id),
                },
                args={
                    "job_id": job_id,
                    "status": status.value,
                    "result": result_json,
                    "reason": reason,
                    **self.change_args(),
                    "attempt": "" if attempt is None else attempt,
                    "aggregating_since": "" if aggregating_since is None else aggregating_since,
                    "destinations": ",".join(self.delivery_destinations),
                },
            )
        return bool(done), int(version)
