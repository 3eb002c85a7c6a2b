"""Delivery workers: every replica runs them; each completed job's result reaches every enabled
destination at least once.

The FINISH script that stores a result also writes a pending delivery record per destination and
queues it on the delivery stream. A worker sends it with timeouts, retrying transient failures
(connection errors, timeouts, 5xx, 408, 429 with its Retry-After, an unwritable directory) with
exponential backoff and jitter; other 4xx are final. The attempt count lives in the record, so a worker
that dies mid-way is replaced (after DELIVERY_CLAIM_IDLE) by one that carries on where it stopped;
after DELIVERY_ATTEMPTS the delivery is dead-lettered (state "failed"), announced, and can be retried
with POST /api/jobs/{jobId}/deliveries/retry. The API receiver can drop duplicates by the
Idempotency-Key, which is the same for every attempt of one result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from orchestrator.backoff import Backoff
from orchestrator.errors import JobNotFound
from orchestrator.models import Job, JobStatus, iso_ms
from orchestrator.queueworkers import QueueWorkers
from orchestrator.results.formats import payload, summary_lines
from orchestrator.results.sinks import Delivered, Rejected, Retry, save_files, send_api
from orchestrator.settings import Settings
from orchestrator.store import JobStore, StoreUnavailable, now_ms
from orchestrator.workqueue import WorkQueue, read_block_ms

logger = logging.getLogger(__name__)
results_logger = logging.getLogger("orchestrator.Aggregator")

GROUP = "deliverers"


class DeliveryService(QueueWorkers):
    what = "delivery"
    # Let deliveries under way finish on shutdown (a file half-written is cleaned up, but a request cut
    # short is sent again by another replica): a short grace, then what is left is cancelled.
    shutdown_grace = 5.0

    def __init__(self, store: JobStore, settings: Settings, session: aiohttp.ClientSession, consumer: str) -> None:
        super().__init__(
            WorkQueue(store, consumer, stream=store.keys.delivery_queue, group=GROUP),
            slots=settings.delivery_workers,
            claim_idle=settings.delivery_claim_idle_seconds,
            block_ms=read_block_ms(settings.redis_timeout),
        )
        self.store = store
        self.settings = settings
        self.session = session
        headers = dict(settings.results_api_headers)
        if settings.results_api_token:
            headers["Authorization"] = f"Bearer {settings.results_api_token}"
        self.headers = headers

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        job_id, destination = fields.get("jobId", ""), fields.get("destination", "")
        try:
            await self._deliver(job_id, destination, int(fields.get("version") or 0))
            await self.queue.done(entry_id)
        except StoreUnavailable as e:
            logger.warning("Delivery %s of job %s interrupted: %s", destination, job_id, e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("Delivery %s of job %s failed unexpectedly", destination, job_id)
            with contextlib.suppress(StoreUnavailable):
                await self._count_failure(entry_id, job_id, destination, f"{e.__class__.__name__}: {e}")

    async def _count_failure(self, entry_id: str, job_id: str, destination: str, reason: str) -> None:
        """An unexpected error counts as an attempt too, so it is dead-lettered in the end, not retried forever."""
        record = await self.store.delivery(job_id, destination)
        if record is None or record.get("state") != "pending":
            await self.queue.done(entry_id)
            return
        attempts = int(record.get("attempts", 0)) + 1
        if attempts >= self.settings.delivery_attempts:
            details = {"state": "failed", "attempts": attempts, "reason": reason, "deadLettered": True}
            await self.store.record_delivery(job_id, destination, details, event="delivery.failed", details=details)
            await self.queue.done(entry_id)
        else:
            await self.store.record_delivery(
                job_id, destination, {"state": "pending", "attempts": attempts, "lastError": reason}
            )

    async def _deliver(self, job_id: str, destination: str, version: int) -> None:
        record = await self.store.delivery(job_id, destination)
        if record is None or record.get("state") != "pending":
            return  # delivered, dead-lettered, or the job expired
        prepared = await self._prepare(job_id)
        if prepared is None:
            return
        job, data, completed = prepared
        attempts = int(record.get("attempts", 0))
        backoff = Backoff(self.settings.delivery_backoff_seconds, self.settings.delivery_max_backoff_seconds)
        while True:
            attempts += 1
            started = time.monotonic()
            outcome = await self._send(destination, data, version, job, completed)
            self.store.metrics.deliveries.labels(destination, type(outcome).__name__.lower()).inc()
            if isinstance(outcome, Delivered):
                await self._delivered(job_id, destination, attempts, outcome, time.monotonic() - started)
                return
            if isinstance(outcome, Rejected) or attempts >= self.settings.delivery_attempts:
                await self._dead_letter(job_id, destination, attempts, outcome.reason)
                return
            assert isinstance(outcome, Retry)
            if not await self._retry_later(job_id, destination, attempts, outcome, backoff):
                return

    async def _prepare(self, job_id: str) -> tuple[Job, dict[str, Any], datetime] | None:
        """The completed job, its result's payload and completion time; None when there is nothing to send."""
        try:
            job = await self.store.get_job(job_id)
        except JobNotFound:
            return None
        if job.status is not JobStatus.COMPLETED or not isinstance(job.final_result, dict):
            return None
        completed = datetime.fromtimestamp((job.completed_at_ms or now_ms()) / 1000, tz=UTC)
        result = job.final_result
        clients = result.get("clientList") or [c.client_id for c in job.clients]
        data = payload(job_id, result.get("aggregatedResults") or [], clients, result.get("metadata"), completed)
        # k of n: whose data the result holds and whose it does not (the payload's additive members).
        data |= {name: result[name] for name in ("contributors", "missingClients", "missingCount") if name in result}
        return job, data, completed

    async def _send(
        self, destination: str, data: dict[str, Any], version: int, job: Job, completed: datetime
    ) -> Delivered | Rejected | Retry:
        if destination == "api" and self.settings.results_api_url:
            return await send_api(
                self.session,
                self.settings.results_api_url,
                data,
                version=version,
                instance=job.instance_id,
                request_timeout=self.settings.delivery_timeout_seconds,
                headers=self.headers,
            )
        if destination == "file":
            return await save_files(self.settings.results_save_path, data, self.settings.results_formats, completed)
        return Rejected(f"destination {destination!r} is not configured on this service")

    async def _delivered(
        self, job_id: str, destination: str, attempts: int, outcome: Delivered, seconds: float
    ) -> None:
        details = {"state": "delivered", "attempts": attempts, "deliveredAt": iso_ms(now_ms()), **outcome.detail}
        await self.store.record_delivery(job_id, destination, details, event="delivery.succeeded", details=details)
        logger.info("Delivered job %s to %s (attempt %d, %.0f ms)", job_id, destination, attempts, seconds * 1000)

    async def _dead_letter(self, job_id: str, destination: str, attempts: int, reason: str) -> None:
        details = {"state": "failed", "attempts": attempts, "reason": reason, "deadLettered": True}
        if not await self.store.record_delivery(job_id, destination, details, event="delivery.failed", details=details):
            _finished_elsewhere(job_id, destination)
            return
        self.store.metrics.dead_letters.labels(destination).inc()
        logger.error(
            "Delivery of job %s to %s failed for good after %d attempt(s): %s", job_id, destination, attempts, reason
        )

    async def _retry_later(
        self, job_id: str, destination: str, attempts: int, outcome: Retry, backoff: Backoff
    ) -> bool:
        """Record the failed attempt and wait before the next; False when the delivery became final meanwhile."""
        pending = {"state": "pending", "attempts": attempts, "lastError": outcome.reason}
        if not await self.store.record_delivery(job_id, destination, pending):
            _finished_elsewhere(job_id, destination)
            return False
        # A Retry-After is honoured, within our own cap: a receiver cannot park a worker for hours.
        wait = backoff.next(outcome.retry_after)
        logger.warning(
            "Delivery of job %s to %s failed (attempt %d): %s; retrying in %.1fs",
            job_id,
            destination,
            attempts,
            outcome.reason,
            wait,
        )
        await asyncio.sleep(wait)
        # Another worker may have finished it while this one waited (it took the entry over after a stall
        # of ours, or the retry endpoint queued it again): no further sends then.
        record = await self.store.delivery(job_id, destination)
        if record is None or record.get("state") != "pending":
            _finished_elsewhere(job_id, destination)
            return False
        return True


def _finished_elsewhere(job_id: str, destination: str) -> None:
    logger.info(
        "Delivery of job %s to %s is final already (another worker finished it, or the job expired); "
        "not sending it again",
        job_id,
        destination,
    )


def log_results(job_id: str, result: dict[str, Any]) -> None:
    """With both destinations disabled: the results, logged feature by feature in the original's style."""
    features = result.get("aggregatedResults") or []
    results_logger.info("Results of job %s (%d feature(s); no destination enabled)", job_id, len(features))
    for line in summary_lines(features):
        results_logger.info("%s", line)
