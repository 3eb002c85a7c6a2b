"""The `secure-sum` and `sum` backends: the service sums the clients' vectors itself and decodes the sum.

With `secure-sum` each stored vector is masked (masking.py, shares.py), so what the service reads, one
vector at a time, tells it nothing about a client. Once the unmask round has closed the service rebuilds,
from t of the survivors' answers, each survivor's self-mask seed and each dropped client's mask-agreement
key, removes those masks from the sum (the survivors' pairwise masks cancel by themselves) and has the sum
of the survivors' inputs, and nothing else. The rebuilt secrets live in memory only, in a worker process.
With `sum` the vectors are plain, for settings where the service may see them.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from orchestrator.aggregation.backends import AttemptContext, Failed, Outcome, Ready
from orchestrator.offload import Offloader
from orchestrator.securesum.layout import LayoutError
from orchestrator.securesum.masking import InvalidPublicKey, parse_public_key, public_key_bytes
from orchestrator.securesum.shares import Combiner, unmask_total
from orchestrator.securesum.statistics import InconsistentAggregate
from orchestrator.securesum.store import MissingVector, RoundStore, VectorStore
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


class UnmaskingFailed(ValueError):
    """The unmask round's answers do not rebuild what the sum needs (too few, or inconsistent)."""


@dataclass(frozen=True)
class Unmasking:
    """What removing the masks takes, as the unmask round left it (picklable, for a worker process)."""

    job_id: str
    instance_id: str
    threshold: int
    survivors: dict[str, str]  # U3: clientId -> its mask-agreement public key (base64)
    dropped: dict[str, str]  # U2 minus U3, the same
    holders: dict[str, int]  # who answered the unmask round -> its share index (its place in U1)
    answers: dict[str, str]  # the same -> its answer (JSON: {"self": {of: [index, value]}, "key": {...}})


def unmask_sum(total: bytes, unmasking: Unmasking) -> bytes:
    """The sum of the survivors' inputs, from the sum of their masked inputs: rebuild each survivor's seed and
    each dropped client's key from ``threshold`` answers (the same Lagrange coefficients for all), check each
    rebuilt key against the public key its client registered, remove the masks. Pure, for a worker process."""
    holders = sorted(unmasking.holders)[: unmasking.threshold]
    if len(holders) < unmasking.threshold:
        raise UnmaskingFailed(f"{len(holders)} unmask answers; {unmasking.threshold} are needed")
    answers = {h: json.loads(unmasking.answers[h]) for h in holders}
    combiner = Combiner([unmasking.holders[h] for h in holders])

    def rebuilt(kind: str, client: str) -> bytes:
        try:
            return combiner.combine([base64.b64decode(answers[h][kind][client][1]) for h in holders])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise UnmaskingFailed(f"the answers hold no usable share of {client}'s {kind} secret ({e})") from None

    seeds = {client: rebuilt("self", client) for client in unmasking.survivors}
    keys = {client: rebuilt("key", client) for client in unmasking.dropped}
    for client, raw in keys.items():
        derived = public_key_bytes(X25519PrivateKey.from_private_bytes(raw))
        if derived != _raw_key(unmasking.dropped[client]):
            raise UnmaskingFailed(f"the shares of {client}'s mask key rebuild another key than the one it registered")
    values = np.frombuffer(total, dtype="<u8").copy()
    survivors = {client: _raw_key(key) for client, key in unmasking.survivors.items()}
    unmask_total(
        values,
        job_id=unmasking.job_id,
        instance_id=unmasking.instance_id,
        survivors=survivors,
        self_seeds=seeds,
        dropped_keys=keys,
    )
    return values.tobytes()


def unmask_and_decode(
    schema_json: str, total: bytes, unmasking: Unmasking, max_rows: int | None
) -> tuple[list[dict[str, Any]] | None, str]:
    """decode_sum of the unmasked sum; (None, why) when it cannot be unmasked."""
    try:
        plain = unmask_sum(total, unmasking)
    except (UnmaskingFailed, InvalidPublicKey) as e:
        return None, f"cannot unmask the sum: {e}"
    return decode_sum(schema_json, plain, len(unmasking.survivors), max_rows)


def _raw_key(text: str) -> bytes:
    return parse_public_key(text)


class VectorSumBackend:
    def __init__(self, name: str, vectors: VectorStore, offload: Offloader, rounds: RoundStore | None = None) -> None:
        self.name = name
        self.vectors = vectors
        self.offload = offload
        self.rounds = rounds

    async def aggregate(self, context: AttemptContext) -> Outcome:
        attempt = context.attempt
        length, max_rows = await self.vectors.vector_shape(attempt.job_id)
        if not length or not attempt.schema_json:
            return Failed("the job has no vector layout (it was not created as a summed-vector job)")
        try:
            total = await self.vectors.sum_vectors(attempt.job_id, attempt.clients, length)
        except MissingVector as e:
            return Failed(f"cannot sum the clients' vectors: {e}")
        if self.rounds is not None:
            unmasking = await self.unmasking(attempt.job_id, attempt.clients)
            if isinstance(unmasking, Failed):
                return unmasking
            features, reason = await self.offload.run(
                len(attempt.schema_json) + total.nbytes,
                unmask_and_decode,
                attempt.schema_json,
                total.tobytes(),
                unmasking,
                max_rows,
                small_in_thread=True,
            )
            if features is None:
                return Failed(reason)
            return Ready({"aggregatedResults": features, "clientList": attempt.clients})
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

    async def unmasking(self, job_id: str, survivors: list[str]) -> Unmasking | Failed:
        """What the unmask round left for removing the masks of the sum of ``survivors``' inputs."""
        assert self.rounds is not None
        rounds = await self.rounds.rounds(job_id)
        if rounds is None:
            return Failed("the job's secure-sum rounds are gone")
        answers = await self.rounds.unmask_answers(job_id)
        dropped = sorted(set(rounds.sharers) - set(survivors))
        keys = await self.rounds.mask_keys(job_id, [*survivors, *dropped])
        return Unmasking(
            job_id=job_id,
            instance_id=rounds.instance_id,
            threshold=rounds.min_clients,
            survivors={c: keys[c] for c in survivors},
            dropped={c: keys[c] for c in dropped},
            holders={c: rounds.index_of(c) for c in answers},
            answers=answers,
        )
