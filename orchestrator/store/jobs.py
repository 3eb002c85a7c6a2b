"""The job's own life: an update (which creates the job), cancelling, failing an overdue collection, expiry."""

from __future__ import annotations

from typing import cast

from orchestrator import scripts
from orchestrator.models import Actor, JobStatus, UpdateOutcome, UpdateRequest, UpdateResult, iso_ms
from orchestrator.store.core import StoreCore, now_ms

_EXPIRE_BATCH = 500
NOBODY = Actor()


class JobWrites(StoreCore):
    async def record_update(self, req: UpdateRequest, actor: Actor = NOBODY) -> UpdateResult:
        """Count one client's completion; create the job on its first update; check the actor's rate limits
        and append the audit entry. One Redis round trip."""
        k, s = self.keys, self.settings
        client_limit, ip_limit = s.rate_limit_client_writes, s.rate_limit_ip_writes
        ms = now_ms()
        index = int(ms / 1000 // s.rate_limit_window_seconds)
        # Without an actor (the service's own calls, tests) nothing is limited.
        rate_client = (actor.client or req.client_id) if actor is not NOBODY else None
        if rate_client is None:
            client_limit = 0
        job_id = req.job_id
        async with self.guard("update"):
            raw = await self.run(
                scripts.UPDATE,
                keys={
                    **k.round_keys(job_id),
                    "created": k.jobs_by_created,
                    "tomb": k.tombstone(job_id),
                    "client_rate": k.rate_counter("client", rate_client or "-", index),
                    "ip_rate": k.rate_counter("ip", actor.ip or "-", index),
                    "audit": k.audit,
                    **self.job_quota_counters(rate_client, actor.ip, ms),
                },
                args={
                    **self.creation_args(req, ms),
                    "now_ms": ms,
                    "now_iso": iso_ms(ms) or "",
                    "aggregation": req.aggregation or "",
                    "vector": req.vector or b"",
                    "max_rows": "" if req.max_rows is None else req.max_rows,
                    "client_limit": client_limit,
                    "ip_limit": ip_limit if actor.ip else 0,
                    "who": actor.who,
                    "role": actor.role,
                    "ip": actor.ip,
                },
            )
        outcome, created, triggered, status, done, total, version, conflict = raw
        return UpdateResult(
            outcome=UpdateOutcome(outcome),
            created=bool(created),
            triggered=bool(triggered),
            status=JobStatus(status),
            done_count=int(done),
            total_clients=int(total),
            version=int(version),
            conflict_field=conflict or None,
        )

    async def cancel_job(self, job_id: str, reason: str) -> tuple[str, JobStatus | None, int]:
        """Cancel a job that has not finished, announcing it; returns (outcome, status, version) with
        outcome 'cancelled', 'already', 'finished' (refused) or 'missing'. Safe to call twice."""
        k = self.keys
        async with self.guard("cancel"):
            outcome, status, version = await self.run(
                scripts.CANCEL,
                keys={
                    **k.job_keys(job_id),
                    "in_progress": k.jobs_by_status(JobStatus.IN_PROGRESS),
                    "aggregating": k.jobs_by_status(JobStatus.AGGREGATING),
                    "cancelled": k.jobs_by_status(JobStatus.CANCELLED),
                    "updated": k.jobs_by_updated,
                    "deadlines": k.jobs_by_deadline,
                    "protocol": k.protocol_keys(job_id),
                },
                args={"job_id": job_id, "reason": reason, **self.change_args()},
            )
        return str(outcome), JobStatus(status) if status else None, int(version)

    async def overdue_collections(self, *, now: int | None = None, limit: int = 500) -> list[str]:
        """Jobs still collecting clients whose collection deadline has passed."""
        ms = now_ms() if now is None else now
        async with self.guard("overdue"):
            return cast(
                list[str], await self.redis.zrangebyscore(self.keys.jobs_by_deadline, "-inf", ms, start=0, num=limit)
            )

    async def close_collection(self, job_id: str, *, by: str = "deadline") -> tuple[bool, str, str, int]:
        """Close a job's collection at its deadline (``by`` 'deadline': only once it is due) or early ('admin'):
        with at least minClients reported it aggregates them, with fewer it fails naming who is missing; a
        secure sum closes its round in progress by the same rule. Returns (closed by this call, outcome,
        status, version); safe to repeat and to race (one call closes)."""
        reason = "Collection deadline passed" if by == "deadline" else "Collection closed by an admin"
        async with self.guard("close_collection"):
            done, outcome, status, version = await self.run(
                scripts.CLOSE_COLLECTION,
                keys=self.keys.round_keys(job_id),
                args={"job_id": job_id, "by": by, "reason": reason, **self.change_args()},
            )
        return bool(done), str(outcome), str(status), int(version)

    async def expire_stale(self, *, now: int | None = None) -> tuple[list[str], bool]:
        """Expire (a batch of) the jobs unchanged for longer than the TTL, announcing each; returns their
        ids and whether more may be waiting."""
        k = self.keys
        ms = now_ms() if now is None else now
        cutoff = ms - self.job_ttl_ms
        expired: list[str] = []
        async with self.guard("expire"):
            stale = cast(
                list[str], await self.redis.zrangebyscore(k.jobs_by_updated, "-inf", cutoff, start=0, num=_EXPIRE_BATCH)
            )
        indexes = [k.jobs_by_created, k.jobs_by_updated, k.jobs_by_deadline, *k.status_indexes()]
        for job_id in stale:
            async with self.guard("expire"):
                done = await self.run(
                    scripts.EXPIRE,
                    keys={
                        **k.job_keys(job_id),
                        "tomb": k.tombstone(job_id),
                        "deliveries": k.deliveries(job_id),
                        "public_keys": k.public_keys(job_id),
                        "vectors": k.vectors(job_id),
                        "sharers": k.sharers(job_id),
                        "shares": k.shares(job_id),
                        "unmask": k.unmask(job_id),
                        "dropped": k.dropped(job_id),
                        "indexes": indexes,
                    },
                    args={
                        "job_id": job_id,
                        "cutoff": cutoff,
                        "now_iso": iso_ms(ms) or "",
                        "channel": k.events_channel,
                        "tomb_ttl": self.job_ttl_ms,
                    },
                )
            if done:
                expired.append(job_id)
        return expired, len(stale) == _EXPIRE_BATCH
