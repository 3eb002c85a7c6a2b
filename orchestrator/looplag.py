"""Event-loop lag: how late a periodic timer fires, which is how long every request on this process waited
for the loop while it ran something else."""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

INTERVAL_SECONDS = 0.25


async def watch_loop_lag(histogram: Histogram, stop: asyncio.Event, interval: float = INTERVAL_SECONDS) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(interval)
        histogram.observe(max(loop.time() - started - interval, 0.0))
