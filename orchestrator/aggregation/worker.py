"""Aggregation workers: every replica runs them; each job is aggregated once, however many there are.

Once per job: the UPDATE script queues a job once; a worker takes it by starting a new attempt (which
fences off any earlier one) and only the attempt that owns the job may finish it (FINISH checks).
Crash-safe: a dead worker's entry is taken over after AGGREGATION_CLAIM_IDLE; the coordinator is not
triggered twice when the first attempt recorded the trigger (and a 409 is read as "go poll" when it
had not). Bounded in time: each attempt gives up at the job's aggregation deadline, and a sweeper in
every replica fails whatever is still AGGREGATING past it, or still collecting past its collection
deadline, even when no worker holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Coroutine
from typing import Any

from orchestrator.aggregation.backends import Backend, Failed, Outcome, Ready, Vector
from orchestrator.aggregation.decoding import DecodingError, decode
from orchestrator.aggregation.queue import aggregation_queue
from orchestrator.aio import pause
from orchestrator.models import Attempt, JobStatus, iso_ms
from orchestrator.queueworkers import QueueWorkers
from orchestrator.results.worker import log_results
from orchestrator.settings import Settings
from orchestrator.store import JobStore, StoreUnavailable, now_ms
from orchestrator.workqueue import read_block_ms

logger = logging.getLogger(__name__)


def consumer_name() -> str:
    """This process's name in the consumer group: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class AggregationService(QueueWorkers):
    what = "aggregation"

    def __init__(self, store: JobStore, settings: Settings, backends: dict[str, Backend], consumer: str) -> None:
        super().__init__(
            aggregation_queue(store, consumer),
            slots=settings.aggregation_workers,
            claim_idle=settings.aggregation_claim_idle_seconds,
            block_ms=read_block_ms(settings.redis_timeout),
        )
        self.store = store
        self.settings = settings
        self.backends = backends
        self.consumer = consumer
        self.timeout = settings.aggregation_timeout_seconds

    def key(self, entry_id: str, fields: dict[str, str]) -> str:
        return fields.get("jobId") or entry_id  # one aggregation of a job at a time in this process

    def extra_loops(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        # The sweeper runs even with no workers here: deadlines hold whoever holds the job.
        return [self._sweep_loop(stop)]

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        job_id = fields.get("jobId", "")
        if not job_id:
            logger.warning("Dropping a malformed aggregation queue entry %s", entry_id)
            with contextlib.suppress(StoreUnavailable):
                await self.queue.done(entry_id)
            return
        await self._process(entry_id, job_id)

    async def _process(self, entry_id: str, job_id: str) -> None:
        try:
            attempt = await self.store.start_attempt(job_id, self.consumer)
            if attempt is None:
                await self.queue.done(entry_id)  # finished, cancelled or expired meanwhile
                return
            outcome = await self._aggregate(attempt)
            status, result, reason = self._result(attempt, outcome)
            done, _ = await self.store.finish_job(job_id, status, result=result, reason=reason, attempt=attempt.number)
            if done:
                self.store.metrics.aggregations.labels(status.value).inc()
                elapsed = time.time() - attempt.aggregating_at_ms / 1000
                self.store.metrics.aggregation_seconds.observe(max(elapsed, 0.0))
                if status is JobStatus.COMPLETED:
                    logger.info(
                        "Job %s aggregated and COMPLETED in %.3fs (attempt %d)", job_id, elapsed, attempt.number
                    )
                    if not self.settings.delivery_destinations and result is not None:
                        log_results(job_id, result)
                else:
                    logger.warning("Job %s FAILED: %s", job_id, reason)
            else:
                logger.info(
                    "Job %s was finished, cancelled or taken over meanwhile; attempt %d stands down",
                    job_id,
                    attempt.number,
                )
                if (job := await self.store.find_job(job_id)) is not None and job.status is JobStatus.AGGREGATING:
                    return  # a newer attempt owns the job and its queue entry: leave that to it
            await self.queue.done(entry_id)
        except StoreUnavailable as e:
            # The entry stays pending: this or another worker takes it up again after the claim idle time.
            logger.warning("Aggregation of job %s interrupted: %s", job_id, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Aggregation of job %s failed unexpectedly; it will be retried", job_id)

    async def _aggregate(self, attempt: Attempt) -> Outcome:
        deadline = attempt.aggregating_at_ms / 1000 + self.timeout
        remaining = deadline - time.time()
        if remaining <= 0:
            return Failed(f"aggregation did not finish within {self.timeout:g} s of the trigger")
        name = attempt.backend or self.settings.aggregation_backend
        backend = self.backends.get(name)
        if backend is None:
            return Failed(f"aggregation backend {name!r} is not configured on this service")

        try:
            return await asyncio.wait_for(backend.aggregate(_Context(self.store, attempt, deadline)), remaining)
        except TimeoutError:
            return Failed(f"aggregation did not finish within {self.timeout:g} s of the trigger")

    def _result(self, attempt: Attempt, outcome: Outcome) -> tuple[JobStatus, dict[str, Any] | None, str]:
        # A summed vector's result names its features: counting them does not parse a long schema again.
        features = outcome.result.get("aggregatedResults") if isinstance(outcome, Ready) else None
        metadata = {
            "totalFeatures": len(features) if features else _feature_count(attempt),
            "totalClients": attempt.total_clients,
            "doneCount": len(attempt.clients),
            "completedAt": iso_ms(now_ms()),
            "aggregation": attempt.backend or self.settings.aggregation_backend,
        }
        # Which clients' data the result holds, and which it does not (k of n).
        participation = {
            "contributors": attempt.clients,
            "missingClients": attempt.missing,
            "missingCount": max(attempt.total_clients - len(attempt.clients), 0),
        }
        if isinstance(outcome, Failed):
            return JobStatus.FAILED, None, outcome.reason
        if isinstance(outcome, Ready):
            return JobStatus.COMPLETED, {**outcome.result, **participation, "metadata": metadata}, ""
        assert isinstance(outcome, Vector)
        if not attempt.features:
            try:
                json.dumps(outcome.values, allow_nan=False)
            except (ValueError, TypeError) as e:
                return JobStatus.FAILED, None, f"the aggregate is not a list of JSON numbers: {e}"
            result = {"aggregatedResults": [], "rawOutput": outcome.values, **participation, "metadata": metadata}
            return JobStatus.COMPLETED, result, ""
        try:
            features = decode(attempt.features, outcome.values, clients=len(attempt.clients))
            # Derived values (a percentage of a tiny count, say) may still not be JSON numbers.
            json.dumps(features, allow_nan=False)
        except DecodingError as e:
            return JobStatus.FAILED, None, f"cannot decode the aggregate: {e}"
        except (ValueError, ArithmeticError) as e:
            return JobStatus.FAILED, None, f"cannot decode the aggregate: {e.__class__.__name__}: {e}"
        return (
            JobStatus.COMPLETED,
            {"aggregatedResults": features, "clientList": attempt.clients, **participation, "metadata": metadata},
            "",
        )

    # --- deadlines ---------------------------------------------------------------------------------

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except StoreUnavailable as e:
                logger.warning("Deadline sweep skipped: %s", e)
            except Exception:
                logger.exception("Deadline sweep failed")
            await pause(stop, self.settings.aggregation_sweep_seconds)

    async def sweep(self) -> None:
        """Fail the jobs past their collection deadline, and those aggregating past their timeout."""
        for job_id in await self.store.overdue_collections():
            closed, outcome, _, _ = await self.store.close_collection(job_id)
            if not closed:
                continue
            if outcome == "failed":
                self.store.metrics.aggregations.labels("FAILED").inc()
                logger.warning("Job %s FAILED: too few clients at its deadline", job_id)
            elif outcome == "aggregating":
                logger.info("Job %s aggregates the clients it has: its deadline passed with a quorum", job_id)
            else:
                logger.info("Job %s: a secure-sum round closed at its deadline; the next one is open", job_id)
        cutoff = now_ms() - int(self.timeout * 1000)
        for job_id, since in (await self.store.aggregating_since()).items():
            if since > cutoff:
                continue
            reason = f"aggregation did not finish within {self.timeout:g} s of the trigger"
            done, _ = await self.store.finish_job(job_id, JobStatus.FAILED, reason=reason, aggregating_since=cutoff)
            if done:
                self.store.metrics.aggregations.labels("FAILED").inc()
                logger.warning("Job %s FAILED: %s", job_id, reason)


class _Context:
    """An AttemptContext on the job store."""

    def __init__(self, store: JobStore, attempt: Attempt, deadline: float) -> None:
        self.store = store
        self.attempt = attempt
        self.deadline = deadline

    async def mark_triggered(self) -> bool:
        return await self.store.mark_triggered(self.attempt)

    async def prepare_trigger(self, token: str) -> tuple[str, bool] | None:
        return await self.store.prepare_trigger(self.attempt, token)

    async def callback_result(self) -> dict[str, Any] | None:
        return await self.store.callback_result(self.attempt.job_id)


def _feature_count(attempt: Attempt) -> int:
    try:
        return len(attempt.features)
    except ValueError:  # a stored schema this version cannot read: decoding says why
        return 0
