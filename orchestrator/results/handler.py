"""AggregatedResultsHandler: the original service's interface to send and save results, async.

    handler = AggregatedResultsHandler(default_save_path="/app/results", api_url="https://api.example/results")
    outcome = await handler.send_and_save(aggregated_data=features, job_id="job_123", client_list=["c1", "c2"])
    # {"api_success": True, "save_success": True, "files": [...], "http_status": 200, ...}

Each flag does only its own thing; with both off the results are logged feature by feature. The service
itself delivers through the durable delivery workers (results/worker.py); this class is for scripts and
for code that used the original's handler.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from orchestrator.results.formats import payload, summary_lines
from orchestrator.results.sinks import Delivered, save_files, send_api

logger = logging.getLogger("orchestrator.Aggregator")


class AggregatedResultsHandler:
    def __init__(
        self,
        default_save_path: str = "results",
        *,
        api_url: str | None = None,
        enable_api_sending: bool = True,
        enable_filesystem_saving: bool = True,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.default_save_path = default_save_path
        self.api_url = api_url
        self.enable_api_sending = enable_api_sending
        self.enable_filesystem_saving = enable_filesystem_saving
        self.session = session
        self.timeout = timeout
        self.headers = headers or {}

    async def send_to_api(
        self,
        aggregated_data: list[dict[str, Any]],
        job_id: str,
        client_list: list[str],
        api_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        version: int = 0,
        instance: str = "",
    ) -> dict[str, Any]:
        """POST the original's payload once; returns {"success", "http_status" or "error"}. ``version`` and
        ``instance`` (the job's instanceId) make its Idempotency-Key."""
        url = api_url or self.api_url
        if not url:
            return {"success": False, "error": "no results API URL"}
        data = payload(job_id, aggregated_data, client_list, metadata, datetime.now(UTC))
        session = self.session or aiohttp.ClientSession()
        try:
            outcome = await send_api(
                session,
                url,
                data,
                version=version,
                instance=instance,
                request_timeout=self.timeout,
                headers=self.headers,
            )
        finally:
            if self.session is None:
                await session.close()
        if isinstance(outcome, Delivered):
            return {"success": True, "http_status": outcome.detail.get("httpStatus")}
        return {"success": False, "error": outcome.reason}

    async def save_to_file(
        self,
        aggregated_data: list[dict[str, Any]],
        job_id: str,
        client_list: list[str],
        file_path: str | None = None,
        file_format: str = "json",
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one file ("json" or "txt") under ``file_path`` (default: the handler's save path)."""
        if file_format not in ("json", "txt"):
            return {"success": False, "error": f"unknown file format {file_format!r}"}
        timestamp = datetime.now(UTC)
        data = payload(job_id, aggregated_data, client_list, metadata, timestamp)
        outcome = await save_files(file_path or self.default_save_path, data, (file_format,), timestamp)
        if isinstance(outcome, Delivered):
            return {"success": True, "files": outcome.detail["files"]}
        return {"success": False, "error": outcome.reason}

    async def send_and_save(
        self,
        aggregated_data: list[dict[str, Any]],
        job_id: str,
        client_list: list[str],
        api_url: str | None = None,
        file_path: str | None = None,
        file_formats: tuple[str, ...] = ("json", "txt"),
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send and/or save as the flags say; with both off, log the results. Returns at least
        ``api_success`` and ``save_success``, and what was written where."""
        result: dict[str, Any] = {"api_success": False, "save_success": False, "files": []}
        if self.enable_api_sending and (api_url or self.api_url):
            sent = await self.send_to_api(aggregated_data, job_id, client_list, api_url, metadata)
            result["api_success"] = sent["success"]
            result["api_response"] = sent
        if self.enable_filesystem_saving:
            outcomes = [
                await self.save_to_file(aggregated_data, job_id, client_list, file_path, fmt, metadata)
                for fmt in file_formats
            ]
            result["save_success"] = all(o["success"] for o in outcomes)
            result["files"] = [f for o in outcomes for f in o.get("files", [])]
            result["save_errors"] = [o["error"] for o in outcomes if not o["success"]]
        if not self.enable_api_sending and not self.enable_filesystem_saving:
            logger.info("Results of job %s (API sending and file saving are both disabled)", job_id)
            for line in summary_lines(aggregated_data):
                logger.info("%s", line)
            result["logged"] = True
        return result
