"""A completed job's result deliveries: their records, announcing their outcomes, and retrying dead letters."""

from __future__ import annotations

import json
from typing import Any

from orchestrator import scripts
from orchestrator.models import iso_ms
from orchestrator.store.core import StoreCore, now_ms


class Deliveries(StoreCore):
    async def delivery(self, job_id: str, destination: str) -> dict[str, Any] | None:
        async with self.guard("delivery"):
            raw = await self.redis.hget(self.keys.deliveries(job_id), destination)
        return json.loads(raw) if raw else None

    async def record_delivery(
        self,
        job_id: str,
        destination: str,
        record: dict[str, Any],
        *,
        event: str = "",
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Store a delivery's state; with ``event`` (delivery.succeeded / delivery.failed) also announce it."""
        members = json.dumps({"destination": destination, **(details or {})}, separators=(",", ":"))[1:-1]
        k = self.keys
        async with self.guard("delivery"):
            done = await self.run(
                scripts.DELIVERY_UPDATE,
                keys={"job": k.job(job_id), "events": k.events(job_id), "deliveries": k.deliveries(job_id)},
                args={
                    "job_id": job_id,
                    "destination": destination,
                    "record": json.dumps(record, separators=(",", ":")),
                    "event": event,
                    "members": members,
                    "now_iso": iso_ms(now_ms()) or "",
                    "history": self.settings.event_history,
                    "channel": k.events_channel,
                },
            )
        return bool(done)

    async def retry_deliveries(self, job_id: str) -> list[str] | None:
        """Queue again the job's dead-lettered deliveries; None if the job is not COMPLETED."""
        k = self.keys
        async with self.guard("delivery"):
            queued = await self.run(
                scripts.DELIVERY_RETRY,
                keys={"job": k.job(job_id), "deliveries": k.deliveries(job_id), "delivery_queue": k.delivery_queue},
                args={"job_id": job_id},
            )
        return None if queued == ["-1"] else [str(q) for q in queued]
