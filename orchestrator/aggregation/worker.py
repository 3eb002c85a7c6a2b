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
import logging
import os
import secrets
import socket
import time
from typing import Any

from orchestrator.aggregation.backends import Backend, Failed, Outcome, Ready, Vector
from orchestrator.aggregation.decoding import DecodingError, decode
from orchestrator.aggregation.queue import WorkQueue
from orchestrator.aio import first, pause
from orchestrator.models import Attempt, JobStatus, iso_ms
from orchestrator.results.worker import log_results
from orchestrator.settings import Settings
from orchestrator.store import JobStore, StoreUnavailable, now_ms

logger = logging.getLogger(__name__)


def consumer_name() -> str:
    """This process's name in the consumer group: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class AggregationService:
    def __init__(self, store: JobStore, settings: Settings, backends: dict[str, Backend], consumer: str) -> None:
        self.store = store
        self.settings = settings
        self.backends = backends
        self.consumer = consumer
        self.queue = WorkQueue(store, consumer)
        self.timeout = settings.aggregation_timeout_seconds
        self.claim_idle_ms = int(settings.aggregation_claim_idle_seconds * 1000)
        self._inflight: dict[str, asyncio.Task[None]] = {}  # jobId -> task
        self._slot = asyncio.Event()

    @property
    def free_slots(self) -> int:
        return self.settings.aggregation_workers - len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        loops = [self._sweep_loop(stop)]
        if self.settings.aggregation_workers > 0:
            loops += [self._read_loop(stop), self._claim_loop(stop)]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await stop.wait()
        finally:
            for task in [*tasks, *self._inflight.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self._inflight.values(), return_exceptions=True)

    # --- taking work -------------------------------------------------------------------------------

    async def _read_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.queue.ensure_group()
                break
            except StoreUnavailable as e:
                logger.warning("Aggregation queue unavailable (%s); retrying", e)
                await pause(stop, 1.0)
        while not stop.is_set():
            if self.free_slots <= 0:
                self._slot.clear()
                await first(self._slot.wait(), stop.wait())
                continue
            try:
                # A finite block: fakeredis does not block on 0, and stop must be noticed.
                entries = await self.queue.read(self.free_slots, block_ms=1000)
            except StoreUnavailable as e:
                logger.warning("Reading the aggregation queue failed (%s); retrying", e)
                await pause(stop, 1.0)
                continue
            except Exception:
                logger.exception("Reading the aggregation queue failed")
                await pause(stop, 1.0)
                continue
            for entry_id, fields in entries:
                self._start(entry_id, fields.get("jobId", ""))

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        interval = max(self.settings.aggregation_claim_idle_seconds / 2, 0.2)
        while not stop.is_set():
            await pause(stop, interval)
            if self.free_slots <= 0 or stop.is_set():
                continue
            try:
                for entry_id, fields in await self.queue.claim_stale(self.claim_idle_ms, self.free_slots):
                    job_id = fields.get("jobId", "")
                    logger.info("Taking over the aggregation of job %s from a worker that went quiet", job_id)
                    self._start(entry_id, job_id)
            except StoreUnavailable as e:
                logger.warning("Claiming stale aggregations failed (%s)", e)
            except Exception:
                logger.exception("Claiming stale aggregations failed")

    def _start(self, entry_id: str, job_id: str) -> None:
        if not job_id:
            logger.warning("Dropping a malformed aggregation queue entry %s", entry_id)
            self._spawn_ack(entry_id)
            return
        if job_id in self._inflight:
            return  # already ours and in progress (claimed back after a pause, say)
        task = asyncio.create_task(self._process(entry_id, job_id), name=f"aggregate:{job_id}")
        self._inflight[job_id] = task
        task.add_done_callback(lambda _: self._finished(job_id))

    def _finished(self, job_id: str) -> None:
        self._inflight.pop(job_id, None)
        self._slot.set()

    def _spawn_ack(self, entry_id: str) -> None:
        async def ack() -> None:
            with contextlib.suppress(StoreUnavailable):
                await self.queue.done(entry_id)

        task = asyncio.create_task(ack())
        self._inflight[f"\0{entry_id}"] = task
        task.add_done_callback(lambda _: self._finished(f"\0{entry_id}"))

    # --- doing it ----------------------------------------------------------------------------------

    async def _process(self, entry_id: str, job_id: str) -> None:
        try:
            attempt = await self.store.start_attempt(job_id, self.consumer)
            if attempt is None:
                await self.queue.done(entry_id)  # finished, cancelled or expired meanwhile
                return
            keeper = asyncio.create_task(self._keep(entry_id))
            try:
                outcome = await self._aggregate(attempt)
            finally:
                keeper.cancel()
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
        metadata = {
            "totalFeatures": len(attempt.schema or []),
            "totalClients": len(attempt.clients),
            "doneCount": len(attempt.clients),
            "completedAt": iso_ms(now_ms()),
            "aggregation": attempt.backend or self.settings.aggregation_backend,
        }
        if isinstance(outcome, Failed):
            return JobStatus.FAILED, None, outcome.reason
        if isinstance(outcome, Ready):
            return JobStatus.COMPLETED, {**outcome.result, "metadata": metadata}, ""
        assert isinstance(outcome, Vector)
        if not attempt.schema:
            return JobStatus.COMPLETED, {"aggregatedResults": [], "rawOutput": outcome.values, "metadata": metadata}, ""
        try:
            features = decode(attempt.schema, outcome.values, clients=len(attempt.clients))
        except DecodingError as e:
            return JobStatus.FAILED, None, f"cannot decode the aggregate: {e}"
        return (
            JobStatus.COMPLETED,
            {"aggregatedResults": features, "clientList": attempt.clients, "metadata": metadata},
            "",
        )

    async def _keep(self, entry_id: str) -> None:
        interval = max(self.claim_idle_ms / 3000, 0.1)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.queue.keep(entry_id)
            except StoreUnavailable as e:
                logger.warning("Could not refresh the claim on %s: %s", entry_id, e)

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
            if await self.store.fail_overdue_collection(job_id):
                self.store.metrics.aggregations.labels("FAILED").inc()
                logger.warning("Job %s FAILED: its collection deadline passed", job_id)
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

    async def set_callback_token(self, token: str) -> bool:
        return await self.store.set_callback_token(self.attempt, token)

    async def callback_result(self) -> dict[str, Any] | None:
        return await self.store.callback_result(self.attempt.job_id)
