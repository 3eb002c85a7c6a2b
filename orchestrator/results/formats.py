"""What a delivered result looks like: the original's JSON payload, the TXT summary, file names."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def payload(
    job_id: str,
    aggregated: list[dict[str, Any]],
    clients: list[str],
    metadata: dict[str, Any] | None,
    timestamp: datetime,
) -> dict[str, Any]:
    """The original's payload, for the results API and the JSON file."""
    return {
        "jobId": job_id,
        "timestamp": timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "clientList": clients,
        "totalClients": len(clients),
        "aggregatedResults": aggregated,
        "metadata": metadata or {},
    }


def idempotency_key(job_id: str, instance: str, version: int) -> str:
    """The same for every attempt to deliver one result, so a receiver can drop duplicates; bound to the job
    instance, since a jobId used again after its job expired starts its versions again."""
    # A job stored before instances existed keeps the key it had, so a delivery retried across the upgrade
    # is still recognised as the same one.
    text = f"{job_id}\0{instance}\0{version}" if instance else f"{job_id}\0{version}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def safe_name(job_id: str) -> str:
    """A file-name part from a jobId: only letters, digits, '.', '_' and '-', never '.' or '..' alone."""
    name = _UNSAFE.sub("_", job_id).strip(".") or "job"
    return name[:100]


def file_name(job_id: str, timestamp: datetime, extension: str) -> str:
    """The sanitised jobId, a short hash of the real one (``a:b`` and ``a_b`` sanitise alike), the time."""
    stamp = timestamp.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"aggregated_results_{safe_name(job_id)}_{digest}_{stamp}.{extension}"


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def summary_lines(aggregated: list[dict[str, Any]]) -> list[str]:
    """Per feature, the original's log lines: `Feature 1/3: age (NUMERIC)` then `  → NotNull: ...`."""
    lines = []
    total = len(aggregated)
    for i, feature in enumerate(aggregated, 1):
        lines.append(f"Feature {i}/{total}: {feature.get('featureName', '?')} ({feature.get('dataType', '?')})")
        lines.append("  → " + _describe(feature))
    return lines


def _describe(feature: dict[str, Any]) -> str:
    data_type = feature.get("dataType")
    parts = []
    if "aggregatedNotNull" in feature:
        parts.append(f"NotNull: {_fmt(feature['aggregatedNotNull'])}")
    if data_type == "BOOLEAN":
        parts.append(f"True: {_fmt(feature.get('aggregatedTrue'))}")
        parts.append(f"Percentage: {_fmt(feature.get('percentage'))}%")
    elif "sum" in feature:
        parts.append(f"Sum: {_fmt(feature['sum'])}")
        parts.append(f"Avg: {_fmt(feature.get('mean'))}")
    else:
        for key, value in feature.items():
            if key in ("featureName", "dataType", "aggregatedNotNull"):
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
            parts.append(f"{key}: {_fmt(value) if not isinstance(value, str) else value}")
    return ", ".join(parts) if parts else "(no statistics)"


def as_text(data: dict[str, Any]) -> str:
    """A readable summary of a result."""
    lines = [
        f"Aggregated results for job {data['jobId']}",
        f"Generated: {data['timestamp']}",
        f"Clients ({data['totalClients']}): {', '.join(data['clientList'])}",
        *(
            [f"Missing ({data['missingCount']}): {', '.join(data.get('missingClients') or []) or 'not known by id'}"]
            if data.get("missingCount")
            else []
        ),
        "",
        *summary_lines(data["aggregatedResults"]),
    ]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{value:.1f}"
    return str(value)
