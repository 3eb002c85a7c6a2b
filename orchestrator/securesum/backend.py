"""The `secure-sum` and `sum` backends: the service sums the clients' vectors itself and decodes the sum.

With `secure-sum` each stored vector is masked (masking.py), so what the service reads, one vector at a
time, tells it nothing about a client; only the sum, where the masks cancel, means anything. With `sum`
the vectors are plain, for settings where the service may see them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from orchestrator.aggregation.backends import AttemptContext, Failed, Outcome, Ready
from orchestrator.offload import Offloader
from orchestrator.securesum.layout import LayoutError
from orchestrator.securesum.statistics import InconsistentAggregate
from orchestrator.securesum.store import MissingVector, VectorStore
from orchestrator.securesum.vectors import layout_of

logger = logging.getLogger(__name__)


def decode_sum(
    schema_json: str, total: bytes, clients: int, max_rows: int | None
) -> tuple[list[dict[str, Any]] | None, str]:
    """(per-feature statistics, '') of the summed vector (little-endian uint64 bytes), or (None, why not).
    Pure, for a worker process: laying out and decoding a long vector is seconds of CPU in Python."""
    try:
        layout = layout_of(schema_json)
    except (LayoutError, ValueError) as e:
        return None, f"the job's schema has no vector layout: {e}"
    try:
        values = np.frombuffer(total, dtype="<i8")
        return layout.decode(values, clients=clients, max_rows=max_rows), ""
    except InconsistentAggregate as e:
        return None, f"cannot decode the sum: {e}"


class VectorSumBackend:
    def __init__(self, name: str, vectors: VectorStore, offload: Offloader) -> None:
        self.name = name
        self.vectors = vectors
        self.offload = offload

    async def aggregate(self, context: AttemptContext) -> Outcome:
        attempt = context.attempt
        length, max_rows = await self.vectors.vector_shape(attempt.job_id)
        if not length or not attempt.schema_json:
            return Failed("the job has no vector layout (it was not created as a summed-vector job)")
        try:
            total = await self.vectors.sum_vectors(attempt.job_id, attempt.clients, length)
        except MissingVector as e:
            return Failed(f"cannot sum the clients' vectors: {e}")
        # Decoding is CPU work in Python integers: a long layout is laid out and decoded in a worker process
        # (its schema and sum pickle at memory speed), a short one in a thread.
        features, reason = await self.offload.run(
            len(attempt.schema_json) + total.nbytes,
            decode_sum,
            attempt.schema_json,
            total.tobytes(),
            len(attempt.clients),
            max_rows,
            small_in_thread=True,
        )
        if features is None:
            return Failed(reason)
        return Ready({"aggregatedResults": features, "clientList": attempt.clients})
