"""The MIP SMPC coordinator backend (DESIGN.md, "The SMPC coordinator").

Trigger: POST {base}/api/secure-aggregation/job-id/{jobId} {"computationType": "sum", "clients": [...]}
  200 queued, 409 already queued or running (so: poll), 400/404 refused (the job fails with the
  coordinator's message), 411 and 5xx and connection errors retried with backoff.
Poll: GET {base}/api/get-result/job-id/{jobId}: 204 unknown yet, 200 with status
  IN_QUEUE/RUNNING/VALIDATING (keep polling), COMPLETED (computationOutput) or FAILED (message).
Everything happens before the job's aggregation deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from orchestrator.aggregation.backends import AttemptContext, Failed, Outcome, Vector
from orchestrator.backoff import Backoff
from orchestrator.models import Attempt
from orchestrator.outbound import BodyTooLarge, read_body
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 411, 425, 429, 500, 502, 503, 504})


class SmpcBackend:
    name = "smpc"

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        if not settings.smpc_coordinator_url:
            raise ValueError("the smpc backend needs SMPC_COORDINATOR_URL")
        self.session = session
        self.base_url = settings.smpc_coordinator_url.rstrip("/")
        self.request_timeout = settings.smpc_request_timeout_seconds
        self.poll_interval = settings.smpc_poll_interval_seconds
        self.max_poll_interval = settings.smpc_poll_max_interval_seconds
        # Our own public base URL: when set, the coordinator is given a returnUrl to push the result to,
        # and polling it becomes the fallback.
        callback_base = settings.public_base_url
        self.callback_base = callback_base.rstrip("/") if callback_base else None
        self.max_result_bytes = settings.smpc_max_result_bytes

    async def aggregate(self, context: AttemptContext) -> Outcome:
        attempt = context.attempt
        job = quote(attempt.job_id, safe="")
        if not attempt.triggered:
            prepared = await context.prepare_trigger(secrets.token_urlsafe(24))
            if prepared is None:
                return Failed("superseded by a newer aggregation attempt")
            token, earlier = prepared
            # An earlier attempt died between its trigger and recording it: if the coordinator knows the
            # job, triggering again could start a second computation (or be refused): just poll.
            if not (earlier and await self._known(job)):
                body: dict[str, Any] = {"computationType": "sum", "clients": attempt.clients}
                if self.callback_base:
                    body["returnUrl"] = f"{self.callback_base}/api/smpc/callback/{job}?token={token}"
                refused = await self._trigger(job, attempt, body)
                if refused is not None:
                    return refused
            if not await context.mark_triggered():
                return Failed("superseded by a newer aggregation attempt")
        return await self._poll(job, context)

    async def _known(self, job: str) -> bool:
        """Whether the coordinator already has the job (get-result answers 200 with a status)."""
        try:
            async with self.session.get(
                f"{self.base_url}/api/get-result/job-id/{job}", timeout=self._timeout()
            ) as resp:
                if resp.status != 200:
                    return False
                data = await _json_body(resp, self.max_result_bytes)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False
        return isinstance(data, dict) and bool(data.get("status"))

    async def _trigger(self, job: str, attempt: Attempt, body: dict[str, Any]) -> Failed | None:
        url = f"{self.base_url}/api/secure-aggregation/job-id/{job}"
        backoff = Backoff(self.poll_interval, self.max_poll_interval)
        while True:
            try:
                async with self.session.post(url, json=body, timeout=self._timeout()) as resp:
                    if resp.status in (200, 201, 202):
                        logger.info("Coordinator accepted job %s (%d clients)", attempt.job_id, len(attempt.clients))
                        return None
                    if resp.status == 409:
                        logger.info("Coordinator already has job %s; polling for its result", attempt.job_id)
                        return None
                    message = await _message(resp)
                    if resp.status not in _RETRY_STATUSES:
                        return Failed(f"coordinator refused the job ({resp.status}): {message}")
                    logger.warning(
                        "Coordinator answered %d to job %s: %s; retrying", resp.status, attempt.job_id, message
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                logger.warning(
                    "Coordinator unreachable for job %s (%s); retrying", attempt.job_id, e or type(e).__name__
                )
            await asyncio.sleep(backoff.next())

    async def _poll(self, job: str, context: AttemptContext) -> Outcome:
        """Wait for the result: pushed to our returnUrl (checked in Redis every poll interval) or, failing
        that, polled from the coordinator with backoff (only every max interval when callbacks are on)."""
        url = f"{self.base_url}/api/get-result/job-id/{job}"
        # With callbacks on, Redis is checked at a steady pace (and the coordinator every max interval).
        pace = Backoff(self.poll_interval, self.max_poll_interval, factor=1.0 if self.callback_base else 1.5)
        next_poll = 0.0
        first = True
        while True:
            if not first:
                await asyncio.sleep(min(pace.next(), max(context.deadline - time.time(), 0)))
            first = False
            if self.callback_base:
                pushed = await context.callback_result()
                outcome = None if pushed is None else _outcome(pushed)
                if outcome is not None:
                    return outcome
                if time.monotonic() < next_poll:
                    continue
                next_poll = time.monotonic() + self.max_poll_interval
            outcome = await self._poll_once(url, context.attempt.job_id)
            if outcome is not None:
                return outcome

    async def _poll_once(self, url: str, job_id: str) -> Outcome | None:
        """The outcome the coordinator reports for the job, or None to ask again later."""
        try:
            async with self.session.get(url, timeout=self._timeout()) as resp:
                if resp.status == 204:
                    return None
                if resp.status != 200:
                    logger.warning("Coordinator answered %d polling job %s", resp.status, job_id)
                    return None
                data = await _json_body(resp, self.max_result_bytes)
        except BodyTooLarge as e:
            # Asking again would get the same answer until the deadline: fail now, and say why.
            return Failed(f"the coordinator's result is over {e.limit} bytes (MAX_RESULT_BYTES)")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            logger.warning("Polling job %s failed (%s); retrying", job_id, e or type(e).__name__)
            return None
        if not isinstance(data, dict):
            logger.warning("Coordinator sent a non-object result for job %s", job_id)
            return None
        return _outcome(data)

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.request_timeout)


def _outcome(data: dict[str, Any]) -> Outcome | None:
    """The job's outcome from a get-result body (polled or pushed), or None while it is still running."""
    status = data.get("status")
    if status == "COMPLETED":
        output = data.get("computationOutput")
        if not isinstance(output, list):
            return Failed("coordinator reported COMPLETED without a computationOutput list")
        return Vector(output)
    if status == "FAILED":
        return Failed(f"coordinator reported the computation FAILED: {data.get('message') or 'no message'}")
    return None


async def _json_body(resp: aiohttp.ClientResponse, limit: int) -> Any:
    """The response's JSON, refusing a body over ``limit`` bytes (a broken or hostile coordinator) with
    BodyTooLarge."""
    return json.loads(await read_body(resp, limit), parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def _message(resp: aiohttp.ClientResponse) -> str:
    try:
        data: Any = await _json_body(resp, 4096)
    except (ValueError, aiohttp.ClientError):
        return resp.reason or ""
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            if data.get(key):
                return str(data[key])[:300]
    return str(data)[:300]
