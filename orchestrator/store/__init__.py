"""JobStore: every read and write of job state goes through here.

It is made of one part per responsibility, over a shared core (the client, the keys, the scripts, the guard):
``jobs`` (an update, cancelling, deadlines, expiry), ``attempts`` (aggregation attempts and finishing a job),
``deliveries`` (result deliveries) and ``reads`` (one job, its events, the listing).
"""

from __future__ import annotations

from orchestrator.store.attempts import Attempts
from orchestrator.store.core import (
    KEY_TTL_GRACE_MS,
    UNAVAILABLE_ERRORS,
    StoreCore,
    StoreRefused,
    StoreUnavailable,
    new_instance_id,
    now_ms,
    pairs,
    script_constants,
)
from orchestrator.store.deliveries import Deliveries
from orchestrator.store.jobs import JobWrites
from orchestrator.store.reads import JobReads

__all__ = [
    "KEY_TTL_GRACE_MS",
    "UNAVAILABLE_ERRORS",
    "JobStore",
    "StoreCore",
    "StoreRefused",
    "StoreUnavailable",
    "new_instance_id",
    "now_ms",
    "pairs",
    "script_constants",
]


class JobStore(JobWrites, Attempts, Deliveries, JobReads):
    """Job state in Redis; ``JobStore(redis, settings, metrics=...)``."""
