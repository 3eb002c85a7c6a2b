"""Redis side of the summed-vector backends: the key round, and the streamed sum of the stored vectors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from redis.client import NEVER_DECODE

from orchestrator import scripts
from orchestrator.models import Actor, KeyRequest, KeyResult
from orchestrator.store import JobStore, now_ms, pairs

_KEY_ROUND_FIELDS = (
    "totalClients",
    "status",
    "aggregation",
    "version",
    "maxRows",
    "instance",
    "minClients",
    "round",
    "roundDeadlineAt",
)


class MissingVector(LookupError):
    """A client counted for the job has no stored vector (it expired, or the job was not a vector job)."""


class VectorStore:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.round_timeout_ms = max(1, int(store.settings.secure_sum_round_timeout_seconds * 1000))

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
                    **k.round_keys(job_id),
                    "created": k.jobs_by_created,
                    "tomb": k.tombstone(job_id),
                    **self.store.job_quota_counters(client, "" if actor is None else actor.ip, ms),
                },
                args={
                    **self.store.creation_args(req, ms),
                    **self.store.change_args(),
                    "max_rows": req.max_rows,
                    "public_key": req.public_key,
                    "encryption_key": req.encryption_key,
                    "round_timeout": self.round_timeout_ms if req.round_timeout_ms is None else req.round_timeout_ms,
                    "round_timeout_declared": "" if req.round_timeout_ms is None else "1",
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


@dataclass(frozen=True)
class RoundAnswer:
    """What the shares or unmask script made of a client's answer."""

    outcome: str  # posted | duplicate | closed | missing | refused
    status: str
    version: int
    count: int
    expected: int
    detail: str


@dataclass(frozen=True)
class Rounds:
    """A secure sum's rounds as they stand: the round in progress and who took part in each."""

    status: str
    round: str
    min_clients: int
    total_clients: int
    instance_id: str
    participants: list[str]  # U1, sorted: a share's index is its holder's 1-based place here
    sharers: list[str]  # U2
    survivors: list[str]  # U3: the clients whose masked input is counted
    answered: list[str]  # the unmask answers so far

    @property
    def dropped_after_sharing(self) -> list[str]:
        """U2 minus U3: the clients whose pairwise masks the service must rebuild."""
        return sorted(set(self.sharers) - set(self.survivors))

    def index_of(self, client_id: str) -> int:
        return self.participants.index(client_id) + 1


class RoundStore:
    """The shares and unmask rounds of a secure sum (lib/rounds.lua closes them)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.keys = store.keys

    async def post_shares(self, job_id: str, client_id: str, bundles: list[tuple[str, str]]) -> RoundAnswer:
        """Keep a client's share bundles (recipient, base64 bundle) for their recipients."""
        digest = hashlib.sha256("\n".join(f"{to} {text}" for to, text in sorted(bundles)).encode()).hexdigest()
        async with self.store.guard("post_shares"):
            raw = await self.store.run(
                scripts.POST_SHARES,
                keys=self.keys.round_keys(job_id),
                args={
                    "job_id": job_id,
                    "client_id": client_id,
                    "digest": digest,
                    **self.store.change_args(),
                    "pairs": [part for pair in bundles for part in pair],
                },
            )
        return _answer(raw)

    async def post_unmask(self, job_id: str, client_id: str, answer: str) -> RoundAnswer:
        """Keep a survivor's unmask answer (canonical JSON, checked against ``rounds`` by the caller)."""
        async with self.store.guard("post_unmask"):
            raw = await self.store.run(
                scripts.POST_UNMASK,
                keys=self.keys.round_keys(job_id),
                args={"job_id": job_id, "client_id": client_id, "answer": answer, **self.store.change_args()},
            )
        return _answer(raw)

    async def rounds(self, job_id: str) -> Rounds | None:
        """The job's rounds (None: no such job, or not a secure sum)."""
        k = self.keys
        async with self.store.guard("rounds"):
            fields, keyed, shared, counted, answered = await self.store.read_atomically(
                ("HMGET", k.job(job_id), "status", "round", "minClients", "totalClients", "instance", "aggregation"),
                ("HKEYS", k.public_keys(job_id)),
                ("HKEYS", k.sharers(job_id)),
                ("HKEYS", k.client_times(job_id)),
                ("HKEYS", k.unmask(job_id)),
            )
        status, round_, k_, total, instance, aggregation = fields
        if status is None or aggregation != "secure-sum":
            return None
        return Rounds(
            status=status,
            round=round_ or "keys",
            min_clients=int(k_ or total),
            total_clients=int(total),
            instance_id=instance or "",
            participants=sorted(keyed),
            sharers=sorted(shared),
            survivors=sorted(counted),
            answered=sorted(answered),
        )

    async def inbox(self, job_id: str, client_id: str, senders: list[str]) -> list[tuple[str, str]]:
        """The bundles ``senders`` sealed for ``client_id``: (sender, base64 bundle)."""
        if not senders:
            return []
        async with self.store.guard("inbox"):
            texts = cast(
                list[str | None],
                await self.store.redis.hmget(self.keys.shares(job_id), [f"{client_id}/{s}" for s in senders]),
            )
        return [(s, t) for s, t in zip(senders, texts, strict=True) if t is not None]

    async def unmask_answers(self, job_id: str) -> dict[str, str]:
        """Every unmask answer (clientId -> JSON)."""
        async with self.store.guard("unmask"):
            return cast(dict[str, str], await self.store.redis.hgetall(self.keys.unmask(job_id)))

    async def mask_keys(self, job_id: str, clients: list[str]) -> dict[str, str]:
        """The mask-agreement public keys (base64) of ``clients``."""
        async with self.store.guard("keys"):
            values = cast(list[str | None], await self.store.redis.hmget(self.keys.public_keys(job_id), clients))
        return {c: v.split(" ")[0] for c, v in zip(clients, values, strict=True) if v}


def _answer(raw: list[Any]) -> RoundAnswer:
    outcome, status, version, count, expected, detail = raw
    return RoundAnswer(str(outcome), str(status), int(version), int(count), int(expected), str(detail))
