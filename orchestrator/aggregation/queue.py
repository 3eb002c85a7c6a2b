"""The aggregation queue: the stream the UPDATE script appends a job to when its last client reports,
and the consumer group every replica's aggregation workers share (AGGREGATION_CLAIM_IDLE takes over
what a dead worker left)."""

from __future__ import annotations

from orchestrator.store import JobStore
from orchestrator.workqueue import WorkQueue

GROUP = "aggregators"


def aggregation_queue(store: JobStore, consumer: str) -> WorkQueue:
    """The aggregation queue, read as ``consumer``."""
    return WorkQueue(store, consumer, stream=store.keys.aggregation_queue, group=GROUP)
