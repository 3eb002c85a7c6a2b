"""The audit trail (a Redis stream, bounded, and the log) and the shared write rate limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from orchestrator import scripts
from orchestrator.logconfig import info_fast
from orchestrator.settings import Settings
from orchestrator.store import JobStore

logger = logging.getLogger("orchestrator.audit")


class AuditLog:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.redis = store.redis
        self.stream = store.keys.audit
        self.max_entries = settings.audit_max_entries

    async def record(self, entry: dict[str, str]) -> None:
        async with self.store.guard("audit"):
            await self.redis.xadd(self.stream, cast(Any, entry), maxlen=self.max_entries, approximate=True)

    async def entries(
        self, limit: int, before: str | None, allow: Callable[[str], bool] | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The newest entries first (before the entry id ``before``), and the cursor of the next page."""
        top = f"({before}" if before else "+"
        async with self.store.guard("audit"):
            raw = cast(
                list[tuple[str, dict[str, str]]],
                await self.redis.xrevrange(self.stream, max=top, min="-", count=limit + 1),
            )
        page = [{"id": entry_id, **fields} for entry_id, fields in raw[:limit]]
        cursor = page[-1]["id"] if len(raw) > limit else None
        if allow is not None:  # a token limited to some jobs sees their entries only
            page = [entry for entry in page if entry.get("job") and allow(entry["job"])]
        return page, cursor

    def counters(self, client: str | None, ip: str, window: float, bucket: str = "ip") -> list[str]:
        """The rate-limit counters of this window: the client's and the IP's (in ``bucket``)."""
        index = int(time.time() // window)
        keys = self.store.keys
        return [keys.rate_counter("client", client or "-", index), keys.rate_counter(bucket, ip, index)]

    async def rate_limited(
        self, client: str | None, ip: str, window: float, limits: tuple[int, int], bucket: str = "ip"
    ) -> float:
        """Seconds until the client (or IP) may write again; 0 when it may now."""
        async with self.store.guard("rate_limit"):
            wait_ms = await self.store.run(
                scripts.RATE_LIMIT,
                keys={"counters": self.counters(client, ip, window, bucket)},
                args={"window": int(window * 1000), "limits": [limits[0] if client else 0, limits[1]]},
            )
        return int(wait_ms) / 1000


def log_entry(entry: dict[str, str]) -> None:
    # Every write logs one: the fast path of the request log lines. Values are the caller's words (a path,
    # a client id): control characters are escaped, so nobody can forge a line.
    info_fast(logger, " ".join(f"{k}={_printable(v)}" for k, v in entry.items() if v and k != "at"))


def _printable(value: str) -> str:
    if value.isprintable() and " " not in value:
        return value
    return "".join(c if c.isprintable() and c != " " else f"\\x{ord(c):02x}" for c in value)
