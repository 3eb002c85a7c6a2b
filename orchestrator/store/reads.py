"""Reading jobs: one job (whole, or its summary), its events, the listing and the counts per status."""

from __future__ import annotations

import json
from typing import Any, cast

from orchestrator.errors import JobNotFound
from orchestrator.models import SUMMARY_FIELDS, Job, JobStatus
from orchestrator.store.core import StoreCore, pairs

_LIST_BATCH = 200


class JobReads(StoreCore):
    async def get_job(self, job_id: str) -> Job:
        """The job with its clients and the time each reported; JobNotFound if there is none."""
        k = self.keys
        async with self.guard("get_job"):
            raw, times, deliveries, keyed, shared, unmasked, dropped = await self.read_atomically(
                ("HGETALL", k.job(job_id)),
                ("HGETALL", k.client_times(job_id)),
                ("HGETALL", k.deliveries(job_id)),
                # A secure sum's rounds (empty for any other job).
                ("HKEYS", k.public_keys(job_id)),
                ("HKEYS", k.sharers(job_id)),
                ("HKEYS", k.unmask(job_id)),
                ("HGETALL", k.dropped(job_id)),
            )
        if not raw:
            raise JobNotFound(job_id)
        job = Job.from_redis(pairs(raw), pairs(times))
        job.deliveries = {name: json.loads(record) for name, record in pairs(deliveries).items()}
        job.participants, job.sharers, job.unmasked = sorted(keyed), sorted(shared), sorted(unmasked)
        job.dropped = pairs(dropped)
        return job

    async def find_job(self, job_id: str) -> Job | None:
        try:
            return await self.get_job(job_id)
        except JobNotFound:
            return None

    async def job_summary(self, job_id: str) -> Job | None:
        """The job with its summary fields only (no schema, result or clients), or None if there is none."""
        async with self.guard("job_summary"):
            row = cast(list[str | None], await self.redis.hmget(self.keys.job(job_id), SUMMARY_FIELDS))
        return Job.summary_from_redis(row)

    async def events_since(self, job_id: str, since: int) -> list[tuple[int, str]] | None:
        """The job's events after version ``since`` as (version, JSON text), oldest first; None when
        the retained history no longer reaches back that far (the caller then needs a snapshot)."""
        async with self.guard("events"):
            current, raw = await self.read_atomically(
                ("HGET", self.keys.job(job_id), "version"), ("LRANGE", self.keys.events(job_id), 0, -1)
            )
        if current is None or since > int(current):
            return None
        events = [(int(json.loads(item)["version"]), item) for item in raw]
        missed = [(v, item) for v, item in events if v > since]
        if int(current) > since and (not missed or missed[0][0] != since + 1):
            return None
        return missed

    async def event_history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's retained events, oldest first."""
        async with self.guard("events"):
            raw = await self.redis.lrange(self.keys.events(job_id), 0, -1)
        return [json.loads(item) for item in raw]

    async def is_participant(self, job_id: str, client_id: str) -> bool:
        """Whether the client has reported for the job or registered a key for it."""
        async with self.guard("participant"), self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self.keys.updated_clients(job_id), client_id)
            pipe.hexists(self.keys.public_keys(job_id), client_id)
            reported, keyed = await pipe.execute()
        return bool(reported) or bool(keyed)

    async def list_jobs(
        self, *, status: JobStatus | None, limit: int, cursor: tuple[int, str] | None
    ) -> tuple[list[Job], tuple[int, str] | None]:
        """Jobs newest first, ``limit`` at a time, with their summary fields only (Job.summary_from_redis); the
        cursor is (createdAt ms, jobId) of the last one seen."""
        index = self.keys.jobs_by_status(status) if status else self.keys.jobs_by_created
        picked: list[tuple[str, int]] = []
        async with self.guard("list_jobs"):
            max_score: str = str(cursor[0]) if cursor else "+inf"
            offset = 0
            while len(picked) <= limit:
                batch = cast(
                    list[tuple[str, float]],
                    await self.redis.zrevrangebyscore(
                        index, max_score, "-inf", start=offset, num=_LIST_BATCH, withscores=True
                    ),
                )
                if not batch:
                    break
                offset += len(batch)
                for member, score in batch:
                    # Equal scores come in descending member order: skip up to and including the cursor.
                    if cursor and int(score) == cursor[0] and member >= cursor[1]:
                        continue
                    picked.append((member, int(score)))
            page, more = picked[:limit], len(picked) > limit
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _ in page:
                    pipe.hmget(self.keys.job(job_id), SUMMARY_FIELDS)
                rows: list[list[str | None]] = await pipe.execute()
        # An expired job may linger in an index until the janitor passes, and a job whose keys a Redis TTL
        # removed may have come back under the same id in another status: leave both out.
        summaries = (Job.summary_from_redis(row) for row in rows)
        jobs = [job for job in summaries if job is not None and (status is None or job.status is status)]
        next_cursor = (page[-1][1], page[-1][0]) if more and page else None
        return jobs, next_cursor

    async def count_by_status(self) -> dict[JobStatus, int]:
        async with self.guard("count_by_status"), self.redis.pipeline(transaction=False) as pipe:
            for status in JobStatus:
                pipe.zcard(self.keys.jobs_by_status(status))
            counts = await pipe.execute()
        return dict(zip(JobStatus, (int(c) for c in counts), strict=True))
