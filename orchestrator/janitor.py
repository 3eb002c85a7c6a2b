"""Background expiry of jobs unchanged for longer than JOB_TTL_SECONDS; runs in every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from orchestrator.store import JobStore, StoreUnavailable

logger = logging.getLogger(__name__)


async def run_janitor(store: JobStore, interval: float, stop: asyncio.Event) -> None:
    """Expire stale jobs every ``interval`` seconds until ``stop`` is set. Replicas may race: the
    expire script announces each job's expiry once."""
    while not stop.is_set():
        try:
            expired = await store.expire_stale()
            if expired:
                store.metrics.expired.inc(len(expired))
                logger.info("Expired %d job(s): %s", len(expired), ", ".join(expired[:20]))
        except StoreUnavailable as e:
            logger.warning("Janitor skipped a round: %s", e)
        except Exception:
            logger.exception("Janitor round failed")
        # Waiting on the event (not a bare sleep) lets shutdown end the loop even if a client
        # library swallowed the task's cancellation mid-command (fakeredis does).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
