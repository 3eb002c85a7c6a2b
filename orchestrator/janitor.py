"""Background expiry of jobs unchanged for longer than JOB_TTL_SECONDS; runs in every replica."""

from __future__ import annotations

import asyncio
import logging
import time

from orchestrator.aio import pause
from orchestrator.settings import Settings
from orchestrator.store import JobStore, StoreUnavailable

logger = logging.getLogger(__name__)


async def run_janitor(store: JobStore, settings: Settings, stop: asyncio.Event) -> None:
    """Expire stale jobs every JANITOR_INTERVAL_SECONDS until ``stop`` is set. Replicas may race: the
    expire script announces each job's expiry once."""
    interval = settings.janitor_interval_seconds
    while not stop.is_set():
        try:
            # Batches until the backlog is cleared (or a minute has gone), so expiry keeps up however
            # many jobs go stale per interval.
            started = time.monotonic()
            while not stop.is_set() and time.monotonic() - started < 60:
                expired, more = await store.expire_stale()
                if expired:
                    store.metrics.expired.inc(len(expired))
                    logger.info("Expired %d job(s): %s", len(expired), ", ".join(expired[:20]))
                if not more:
                    break
        except StoreUnavailable as e:
            logger.warning("Janitor skipped a round: %s", e)
        except Exception:
            logger.exception("Janitor round failed")
        # Waiting on the event (not a bare sleep) lets shutdown end the loop even if a client
        # library swallowed the task's cancellation mid-command (fakeredis does).
        await pause(stop, interval)
