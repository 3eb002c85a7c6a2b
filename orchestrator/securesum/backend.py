"""The `secure-sum` and `sum` backends: the service sums the clients' vectors itself and decodes the sum.

With `secure-sum` each stored vector is masked (masking.py), so what the service reads, one vector at a
time, tells it nothing about a client; only the sum, where the masks cancel, means anything. With `sum`
the vectors are plain, for settings where the service may see them.
"""

from __future__ import annotations

import asyncio
import logging

from orchestrator.aggregation.backends import AttemptContext, Failed, Outcome, Ready
from orchestrator.securesum.layout import InconsistentAggregate, LayoutError, VectorLayout
from orchestrator.securesum.store import MissingVector, VectorStore

logger = logging.getLogger(__name__)


class VectorSumBackend:
    def __init__(self, name: str, vectors: VectorStore) -> None:
        self.name = name
        self.vectors = vectors

    async def aggregate(self, context: AttemptContext) -> Outcome:
        attempt = context.attempt
        try:
            layout = VectorLayout.from_schema(attempt.schema or [])
        except LayoutError as e:
            return Failed(f"the job's schema has no vector layout: {e}")
        try:
            total = await self.vectors.sum_vectors(attempt.job_id, attempt.clients, layout.length)
        except MissingVector as e:
            return Failed(f"cannot sum the clients' vectors: {e}")
        max_rows = await self.vectors.max_rows(attempt.job_id)
        try:
            # Decoding a long vector is CPU work in Python integers: off the event loop.
            features = await asyncio.to_thread(
                layout.decode, total.view("<i8"), clients=len(attempt.clients), max_rows=max_rows
            )
        except InconsistentAggregate as e:
            return Failed(f"cannot decode the sum: {e}")
        return Ready({"aggregatedResults": features, "clientList": attempt.clients})
