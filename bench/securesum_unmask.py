"""Dropout-tolerant secure-sum benchmark (orchestrator/securesum/shares.py): what each side computes.

With CLIENTS key registrants, threshold t = CLIENTS // 2 + 1, DROPPED of them sending no input and LENGTH
elements:
  1. server unmask: unmask_total on a LENGTH-long sum, removing CLIENTS - DROPPED self masks and
     DROPPED x (CLIENTS - DROPPED) pairwise masks: its time, then again under tracemalloc for its peak
     allocations, and the process's peak RSS before and after (run first, so that peak is its own);
  2. server combine: a Combiner for t share holders, then the secrets it rebuilds (a seed per survivor and
     a 32-byte key, two Shamir secrets, per dropped client);
  3. client shares: splitting its key and seed (3 Shamir secrets) among CLIENTS holders, and sealing the
     CLIENTS bundles;
  4. client masking: CLIENTS - 1 pairwise masks and its self mask on a LENGTH-long vector.

    python bench/securesum_unmask.py                      # 100 clients, 10^6 elements, 10 dropped
    python bench/securesum_unmask.py --clients 20 --length 10000 --dropped 3
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from orchestrator.securesum.masking import generate_private_key, mask_vector, private_key_bytes, public_key_bytes
from orchestrator.securesum.shares import (
    Combiner,
    apply_self_mask,
    seal_bundle,
    self_mask_seed,
    split_secret,
    unmask_total,
)

JOB, INSTANCE = "bench", "bench-1"
T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """What ``action`` returns, and the seconds it took."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def server_unmask(ids: list[str], keys: dict[str, X25519PrivateKey], dropped: int, length: int) -> None:
    survivors = {c: public_key_bytes(keys[c]) for c in ids[dropped:]}
    seeds = {c: self_mask_seed() for c in survivors}
    dropped_keys = {c: private_key_bytes(keys[c]) for c in ids[:dropped]}
    total = np.random.default_rng(1).integers(0, 2**64, size=length, dtype=np.uint64)

    def run() -> None:
        unmask_total(
            total, job_id=JOB, instance_id=INSTANCE, survivors=survivors, self_seeds=seeds, dropped_keys=dropped_keys
        )

    rss_before = peak_rss_mib()
    _, seconds = timed(run)
    rss_after = peak_rss_mib()
    tracemalloc.start()
    run()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    masks = len(survivors) * (1 + dropped)
    print(
        f"server unmask_total: {seconds:.2f} s for {masks} masks of {length * 8 / 2**20:.1f} MiB"
        f" ({len(survivors)} self, {len(survivors) * dropped} pairwise; {seconds / masks * 1e3:.2f} ms each)"
    )
    print(
        f"  memory: sum {total.nbytes / 2**20:.1f} MiB; allocations during the call peak at"
        f" {traced_peak / 2**20:.2f} MiB (tracemalloc); peak RSS {rss_before:.0f} MiB before, {rss_after:.0f} after"
    )


def server_combine(clients: int, dropped: int) -> None:
    threshold = clients // 2 + 1
    secrets = [os.urandom(16) for _ in range(clients - dropped)] + [os.urandom(32) for _ in range(dropped)]
    shares = [split_secret(s, threshold, clients) for s in secrets]
    holders = range(clients - threshold, clients)  # the last t holders answer
    combiner, setup = timed(lambda: Combiner([shares[0][h][0] for h in holders]))
    rebuilt, seconds = timed(lambda: [combiner.combine([s[h][1] for h in holders]) for s in shares])
    assert rebuilt == secrets
    halves = clients - dropped + 2 * dropped
    print(
        f"server combine: {setup * 1e3:.0f} ms for the Combiner of {threshold} holders, then {seconds * 1e3:.0f} ms"
        f" for {len(secrets)} secrets ({halves} Shamir secrets; {seconds / halves * 1e3:.2f} ms each)"
    )


def client_shares(ids: list[str], keys: dict[str, X25519PrivateKey]) -> None:
    threshold = len(ids) // 2 + 1
    me = generate_private_key()
    (key_shares, seed_shares), split = timed(
        lambda: (
            split_secret(private_key_bytes(me), threshold, len(ids)),
            split_secret(self_mask_seed(), threshold, len(ids)),
        )
    )
    own = generate_private_key()
    peers = {c: public_key_bytes(keys[c]) for c in ids}

    def seal_all() -> None:
        for i, c in enumerate(ids):
            seal_bundle(
                own,
                peers[c],
                job_id=JOB,
                instance_id=INSTANCE,
                sender="me",
                recipient=c,
                key_share=key_shares[i],
                seed_share=seed_shares[i],
            )

    _, sealing = timed(seal_all)
    print(
        f"client shares: {split * 1e3:.0f} ms to split 3 secrets (threshold {threshold}) among {len(ids)} holders,"
        f" {sealing * 1e3:.0f} ms to seal {len(ids)} bundles"
    )


def client_masking(ids: list[str], keys: dict[str, X25519PrivateKey], length: int) -> None:
    values = np.random.default_rng(2).integers(0, 1000, size=length, dtype=np.int64)
    public_keys = {c: public_key_bytes(keys[c]) for c in ids}
    me, seed = ids[0], self_mask_seed()

    def mask() -> None:
        masked = mask_vector(
            values, job_id=JOB, instance_id=INSTANCE, client_id=me, private_key=keys[me], public_keys=public_keys
        )
        apply_self_mask(masked, seed, job_id=JOB, instance_id=INSTANCE, client_id=me, subtract=False)

    _, seconds = timed(mask)
    print(f"client masking: {seconds:.2f} s for {len(ids) - 1} pairwise masks and its self mask of {length} elements")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100, help="key registrants (default 100)")
    parser.add_argument("--length", type=int, default=10**6, help="vector elements (default 10^6)")
    parser.add_argument("--dropped", type=int, default=10, help="clients that send no input (default 10)")
    args = parser.parse_args()
    if not 0 <= args.dropped <= args.clients - (args.clients // 2 + 1):
        parser.error("at least a threshold (clients // 2 + 1) of the clients must survive")
    ids = [f"c{i:04d}" for i in range(args.clients)]
    keys = {c: generate_private_key() for c in ids}
    server_unmask(ids, keys, args.dropped, args.length)
    server_combine(args.clients, args.dropped)
    client_shares(ids, keys)
    client_masking(ids, keys, args.length)


if __name__ == "__main__":
    main()
