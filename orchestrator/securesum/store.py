"""Redis side of the summed-vector backends: the key round, and the streamed sum of the stored vectors."""

from __future__ import annotations

from typing import cast

import numpy as np
from redis.client import NEVER_DECODE

from orchestrator import scripts
from orchestrator.models import Actor, JobStatus, KeyRequest, KeyResult
from orchestrator.store import JobStore, now_ms, pairs

_KEY_ROUND_FIELDS = ("totalClients", "status", "aggregation", "version", "maxRows", "instance")


class MissingVector(LookupError):
    """A client counted for the job has no stored vector (it expired, or the job was not a vector job)."""


class VectorStore:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    async def register_key(self, req: KeyRequest, actor: Actor | None = None) -> KeyResult:
        """Record a client's public key; the first key of a job creates it, the last one completes the round.
        A job it creates counts against the actor's job quotas (none without an actor)."""
        k, job_id = self.keys, req.job_id
        ms = now_ms()
        client = None if actor is None else actor.client or req.client_id
        async with self.store.guard("register_key"):
            raw = await self.store.run(
                scripts.REGISTER_KEY,
                keys={
                    "job": k.job(job_id),
                    "events": k.events(job_id),
                    "public_keys": k.public_keys(job_id),
                    "created": k.jobs_by_created,
                    "in_progress": k.jobs_by_status(JobStatus.IN_PROGRESS),
                    "deadlines": k.jobs_by_deadline,
                    "tomb": k.tombstone(job_id),
                    "updated": k.jobs_by_updated,
                    **self.store.job_quota_counters(client, "" if actor is None else actor.ip, ms),
                },
                args={
                    **self.store.creation_args(req, ms),
                    **self.store.change_args(),
                    "max_rows": req.max_rows,
                    "public_key": req.public_key,
                },
            )
        outcome, created, count, total, version, status, detail, *instance = raw
        return KeyResult(
            str(outcome),
            bool(created),
            int(count),
            int(total),
            int(version),
            str(status),
            detail or None,
            str(instance[0]) if instance else "",
        )

    async def key_round(self, job_id: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """The job's fields the key round needs, and its public keys (clientId -> base64); None if no job."""
        async with self.store.guard("keys"):
            fields, public_keys = await self.store.read_atomically(
                ("HMGET", self.keys.job(job_id), *_KEY_ROUND_FIELDS), ("HGETALL", self.keys.public_keys(job_id))
            )
        if fields[0] is None:
            return None
        names = _KEY_ROUND_FIELDS
        return {n: v or "" for n, v in zip(names, fields, strict=True)}, pairs(public_keys)

    async def vector_shape(self, job_id: str) -> tuple[int | None, int | None]:
        """The job's vector length and maxRows, as its creation stored them (None: not a vector job)."""
        async with self.store.guard("vector"):
            length, max_rows = await self.redis.hmget(self.keys.job(job_id), "vectorLength", "maxRows")
        return (int(length) if length else None), (int(max_rows) if max_rows else None)

    async def stored_vector(self, job_id: str, client_id: str) -> bytes | None:
        """What the service keeps of a client's vector (for tests and audits)."""
        async with self.store.guard("vector"):
            raw = await self.redis.execute_command(  # type: ignore[no-untyped-call]
                "HGET", self.keys.vectors(job_id), client_id, **{NEVER_DECODE: True}
            )
        return cast(bytes | None, raw)

    async def sum_vectors(self, job_id: str, clients: list[str], length: int) -> np.ndarray:
        """The element-wise sum mod 2**64 of the clients' stored vectors (uint64). Reads one vector at a
        time, so memory stays at the sum plus one vector however many clients there are."""
        total = np.zeros(length, dtype="<u8")
        for client_id in clients:
            raw = await self.stored_vector(job_id, client_id)
            if raw is None:
                raise MissingVector(f"no stored vector for client {client_id}")
            if len(raw) != 8 * length:
                raise MissingVector(f"the stored vector of client {client_id} has {len(raw) // 8} values, not {length}")
            total += np.frombuffer(raw, dtype="<u8")
            del raw
        return total
