"""Secure-sum benchmark: a client's masking time, and the service's sum of the stored vectors.

For CLIENTS in {10, 100} and ELEMENTS in {10^4, 10^6}:
  1. masking: one client masks an ELEMENTS-long vector against CLIENTS - 1 peers (X25519, HKDF,
     AES-256-CTR keystreams, numpy adds), the time `submit_statistics` spends before sending;
  2. storing: one update carrying an ELEMENTS-long vector through the UPDATE script (ms per update);
  3. server sum: CLIENTS stored vectors summed mod 2^64 by VectorStore.sum_vectors (the secure-sum
     backend's read path) from a real Redis, timed, then again under tracemalloc for its peak memory.
Plus the time to decode a 10^6-value sum. Uses Redis DB 9 of REDIS_URL (default the local server),
under its own key prefix, deleted afterwards.

    python bench/secure_sum.py                 # all four sizes (~1 min; 800 MB in Redis at the largest)
    python bench/secure_sum.py --sizes 10x10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import tracemalloc
import uuid

import numpy as np
import redis.asyncio as aioredis

from orchestrator.metrics import Metrics
from orchestrator.models import UpdateRequest
from orchestrator.securesum.layout import VectorLayout
from orchestrator.securesum.masking import generate_private_key, mask_vector, public_key_bytes
from orchestrator.securesum.store import VectorStore
from orchestrator.settings import Settings
from orchestrator.store import JobStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9")


def masking_seconds(clients: int, elements: int, repeats: int) -> float:
    peers = {f"p{i:03d}": public_key_bytes(generate_private_key()) for i in range(clients - 1)}
    values = np.random.default_rng(1).integers(0, 1000, size=elements, dtype=np.int64)
    key = generate_private_key()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        mask_vector(values, job_id="bench", instance_id="bench-1", client_id="me", private_key=key, public_keys=peers)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def server_side(store: JobStore, clients: int, elements: int) -> tuple[float, float, float]:
    """(ms per update storing one vector, sum seconds, sum peak MiB)."""
    vectors = VectorStore(store)
    job = f"sum-{clients}-{elements}"
    schema = [{"name": f"b{i}", "dataType": "BOOLEAN"} for i in range(elements // 2)]
    layout = VectorLayout.from_schema(schema)
    rng = np.random.default_rng(2)
    schema_json = json.dumps(schema, separators=(",", ":"))
    update_times = []
    ids = [f"c{i:03d}" for i in range(clients)]
    for client_id in ids:
        vector = rng.integers(0, 2**64, size=layout.length, dtype=np.uint64).tobytes()
        request = UpdateRequest(
            job_id=job,
            client_id=client_id,
            total_clients=clients + 1,  # one more than stored: the job stays collecting, nothing is aggregated
            schema_json=schema_json if client_id == ids[0] else None,  # as the octet-stream updates do
            aggregation="sum",
            vector=vector,
            vector_length=layout.length,
            max_rows=1,
        )
        started = time.perf_counter()
        result = await store.record_update(request)
        update_times.append(time.perf_counter() - started)
        assert result.outcome.value == "recorded", result
        del vector
    started = time.perf_counter()
    await vectors.sum_vectors(job, ids, layout.length)
    sum_seconds = time.perf_counter() - started
    tracemalloc.start()
    await vectors.sum_vectors(job, ids, layout.length)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(update_times) * 1000, sum_seconds, peak / 2**20


def decode_seconds(elements: int) -> float:
    layout = VectorLayout.from_schema([{"name": f"b{i}", "dataType": "BOOLEAN"} for i in range(elements // 2)])
    total = np.zeros(layout.length, dtype=np.int64)
    started = time.perf_counter()
    layout.decode(total, clients=100)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10x10000,100x10000,10x1000000,100x1000000", help="CLIENTSxELEMENTS,...")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=30)
    store = JobStore(
        redis,
        Settings(key_prefix=prefix, job_ttl_seconds=3600, event_history=10, enable_filesystem_saving=False),
        metrics=Metrics(),
    )
    print(f"Redis {REDIS_URL}, prefix {prefix}")
    print(f"{'clients':>7} {'elements':>9} {'mask (s)':>9} {'update (ms)':>11} {'sum (s)':>8} {'sum peak (MiB)':>14}")
    try:
        for clients, elements in sizes:
            mask = masking_seconds(clients, elements, repeats=3 if elements <= 10**4 else 1)
            update_ms, sum_s, peak = await server_side(store, clients, elements)
            print(f"{clients:>7} {elements:>9} {mask:>9.3f} {update_ms:>11.1f} {sum_s:>8.3f} {peak:>14.1f}", flush=True)
            async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
                await redis.delete(key)
        print(f"decode of a 10^6-value sum (500,000 BOOLEAN features): {decode_seconds(10**6):.2f} s")
    finally:
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            await redis.delete(key)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
