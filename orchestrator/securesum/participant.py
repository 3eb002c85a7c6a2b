"""A data holder's side of the summed-vector backends: local statistics from rows, the key round, masking
and submission, a layer above the HTTP client (OrchestratorClient).

    async with OrchestratorClient(url) as client:
        result = await submit_statistics(client, "job-1", "hospital-A", 3, schema, "data.csv", wait=True)
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from orchestrator.client import JobNotFoundError, OrchestratorClient
from orchestrator.securesum.keyfile import KeyFile
from orchestrator.securesum.layout import RowError, VectorLayout
from orchestrator.securesum.masking import (
    InvalidPublicKey,
    encode_key,
    generate_private_key,
    mask_vector,
    parse_public_key,
    public_key_bytes,
)

DEFAULT_MAX_ROWS = 1_000_000
Rows = Iterable[Mapping[str, Any]] | str | PathLike[str]


class KeyRoundError(RuntimeError):
    """The key round's outcome cannot be trusted (our own key is missing or changed, a key is unusable)."""


def read_rows(rows: Rows, columns: Iterable[str] = ()) -> Iterable[Mapping[str, Any]]:
    """Rows as given, or the rows of a CSV file (header line first), which must have every one of
    ``columns``: a misspelt header would otherwise count the feature as missing in every row."""
    if isinstance(rows, (str, PathLike)):
        with Path(rows).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise RowError(f"{rows}: no column for {', '.join(missing)} (its header: {reader.fieldnames})")
            return list(reader)
    return rows


def local_statistics(schema: list[dict[str, Any]], rows: Rows, total_clients: int, max_rows: int) -> np.ndarray:
    """This client's int64 statistics vector; LayoutError, OverflowRisk or RowError before anything is sent."""
    layout = VectorLayout.from_schema(schema)
    layout.check_capacity(total_clients, max_rows)
    return layout.encode(read_rows(rows, [f.name for f in layout.features]), max_rows=max_rows)


async def submit_statistics(
    client: OrchestratorClient,
    job_id: str,
    client_id: str,
    total_clients: int,
    schema: list[dict[str, Any]],
    rows: Rows,
    *,
    aggregation: str = "secure-sum",
    max_rows: int = DEFAULT_MAX_ROWS,
    wait: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 - the documented API
    private_key: X25519PrivateKey | None = None,
    key_file: KeyFile | None = None,
) -> dict[str, Any]:
    """Compute this client's statistics of ``rows`` (dicts, or a CSV file's path), take part in the key
    round, mask and submit them; with ``wait=True`` return the job's final status. ``aggregation`` is
    'secure-sum' or 'sum'. Refuses (ValueError) rows that do not fit the schema or a job whose sums could
    overflow, before sending anything. With ``key_file`` the private key is the one kept there, bound to the
    job instance it was first registered with (a rerun of the same instance takes part with the same key;
    another instance of the jobId is refused before anything is sent)."""
    values = local_statistics(schema, rows, total_clients, max_rows)
    async with asyncio.timeout(timeout):
        if aggregation == "sum":
            answer = await client.update(
                job_id,
                client_id,
                total_clients,
                schema,
                vector=values.view("<u8").tobytes(),
                max_rows=max_rows,
                aggregation="sum",
            )
        elif aggregation == "secure-sum":
            if key_file is not None:
                private_key = key_file.private_key
                if key_file.instance_id is not None:
                    key_file.check(await current_instance(client, job_id))
            private_key = private_key or generate_private_key()
            own_key = public_key_bytes(private_key)
            registered = await client.register_key(
                job_id, client_id, total_clients, encode_key(own_key), schema, max_rows=max_rows
            )
            instance = str(registered.get("instanceId") or "")
            if not instance:
                raise KeyRoundError(f"the service gave no instanceId for job {job_id}")
            if key_file is not None:
                key_file.bind(instance)
            round_ = await client.wait_for_keys(job_id)
            if round_.get("instanceId") != instance:
                raise KeyRoundError(f"job {job_id} is another instance than the one this key was registered with")
            public_keys = checked_keys(round_, client_id, own_key, total_clients)
            if key_file is not None:
                key_file.mask(values.tobytes())
            masked = await asyncio.to_thread(
                mask_vector,
                values,
                job_id=job_id,
                instance_id=instance,
                client_id=client_id,
                private_key=private_key,
                public_keys=public_keys,
            )
            answer = await client.submit_vector(job_id, client_id, total_clients, masked.tobytes())
        else:
            raise ValueError(f"aggregation must be 'secure-sum' or 'sum', not {aggregation!r}")
        if wait:
            return await client.wait_for_completion(job_id)
    return answer


async def current_instance(client: OrchestratorClient, job_id: str) -> str | None:
    """The instanceId of the job's key round, or None when there is no such job."""
    try:
        return str((await client.keys(job_id)).get("instanceId") or "") or None
    except JobNotFoundError:
        return None


def checked_keys(round_: dict[str, Any], client_id: str, own_key: bytes, total_clients: int) -> dict[str, bytes]:
    """The key round's keys (clientId -> raw key), after checking it is complete and carries our key."""
    try:
        keys = {entry["clientId"]: parse_public_key(entry["publicKey"]) for entry in round_["keys"]}
    except (KeyError, TypeError, InvalidPublicKey) as e:
        raise KeyRoundError(f"the key round returned an unusable key: {e}") from None
    if len(keys) != total_clients:
        raise KeyRoundError(f"the key round has {len(keys)} keys; the job has {total_clients} clients")
    if keys.get(client_id) != own_key:
        raise KeyRoundError(f"the key round does not carry client {client_id}'s own public key")
    return keys
