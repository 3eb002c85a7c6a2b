"""The two destinations: files (aiofiles, written to a temporary name and renamed into place) and the
results API (aiohttp). Each attempt ends Delivered, Retry (a transient failure) or Rejected (final)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import aiohttp

from orchestrator.backoff import retry_after_seconds
from orchestrator.outbound import read_body
from orchestrator.results.formats import as_json, as_text, file_name, idempotency_key

_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delivered:
    detail: dict[str, Any]


@dataclass(frozen=True)
class Retry:
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str


Attempt = Delivered | Retry | Rejected


async def save_files(directory: str, data: dict[str, Any], formats: tuple[str, ...], timestamp: datetime) -> Attempt:
    """Write the result in each format under ``directory``; a failure to write is worth retrying."""
    root = _root(directory)
    written = []
    try:
        await aiofiles.os.makedirs(root, exist_ok=True)
        for fmt in formats:
            path = _inside(root, file_name(data["jobId"], timestamp, fmt))
            if path is None:  # cannot happen with safe_name(); kept as the last guard
                return Rejected(f"refusing to write outside {root}")
            text = as_json(data) if fmt == "json" else as_text(data)
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            try:
                async with aiofiles.open(temporary, "w", encoding="utf-8") as f:
                    await f.write(text)
                    await f.flush()
                    await aiofiles.os.wrap(os.fsync)(f.fileno())
                await aiofiles.os.replace(temporary, path)
            finally:
                if await aiofiles.os.path.exists(temporary):
                    await aiofiles.os.remove(temporary)
            written.append(str(path))
    except OSError as e:
        return Retry(f"cannot write the results in {root}: {e.strerror or e}")
    return Delivered({"files": written})


async def send_api(
    session: aiohttp.ClientSession,
    url: str,
    data: dict[str, Any],
    *,
    version: int,
    instance: str,
    request_timeout: float,
    headers: dict[str, str],
) -> Attempt:
    """POST the payload with an Idempotency-Key that stays the same for every attempt of this result."""
    all_headers = {**headers, "Idempotency-Key": idempotency_key(data["jobId"], instance, version)}
    try:
        async with session.post(
            url, json=data, headers=all_headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as resp:
            text = (await read_body(resp, 1024, truncate=True)).decode("utf-8", "replace")[:200]
            if resp.status < 300:
                return Delivered({"httpStatus": resp.status})
            if resp.status in _RETRY_STATUSES:
                return Retry(
                    f"results API answered {resp.status}: {text}", retry_after_seconds(resp.headers.get("Retry-After"))
                )
            return Rejected(f"results API refused the result ({resp.status}): {text}")
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return Retry(f"results API unreachable: {e or type(e).__name__}")


def _root(directory: str) -> Path:
    return Path(os.path.abspath(directory))


def _inside(root: Path, name: str) -> Path | None:
    """``root/name``, or None if that would not be directly inside ``root``."""
    path = Path(os.path.normpath(root / name))
    return path if path.parent == root else None
