"""An async client for the orchestrator's API: report updates, read status, follow events live.

async with OrchestratorClient("http://127.0.0.1:5000") as client:
    await client.update("job-1", "client-A", total_clients=3)
    async for event in client.watch("job-1"):
        print(event)
    final = await client.wait_for_completion("job-1", timeout=600)
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from orchestrator.backoff import Backoff, retry_after_seconds

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# A secure sum's rounds, in order (GET /api/jobs/{jobId}/keys says which is in progress).
_ROUNDS = ("keys", "shares", "inputs", "unmask", "done")
_RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})


class OrchestratorError(Exception):
    """The service refused a request; ``status`` and ``code`` say why."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class JobNotFoundError(OrchestratorError):
    pass


class OrchestratorClient:
    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        max_backoff: float = 10.0,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # A bearer token (JWT) for a service with authentication on; sent on every request and socket.
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_session = session is None
        self._session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = retries
        self.max_backoff = max_backoff

    async def __aenter__(self) -> OrchestratorClient:
        return self

    async def __aexit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def update(
        self,
        job_id: str,
        client_id: str,
        total_clients: int,
        schema: list[dict[str, Any]] | None = None,
        *,
        vector: bytes | None = None,
        max_rows: int | None = None,
        aggregation: str | None = None,
        min_clients: int | None = None,
        deadline: str | float | None = None,
    ) -> dict[str, Any]:
        """Report that ``client_id`` finished its part of ``job_id`` (with its statistics ``vector``, for a
        summed-vector job). Retried on 503 and connection errors: the service counts each client once, so
        a repeat is harmless."""
        body: dict[str, Any] = {"jobId": job_id, "clientId": client_id, "totalClients": total_clients}
        if schema is not None:
            body["schema"] = schema
        if vector is not None:
            body["vector"] = base64.b64encode(vector).decode("ascii")
        if max_rows is not None:
            body["maxRows"] = max_rows
        if aggregation is not None:
            body["aggregation"] = aggregation
        if min_clients is not None:
            body["minClients"] = min_clients
        if deadline is not None:
            body["deadline"] = deadline
        return await self._request("POST", "/api/update", json_body=body)

    async def submit_vector(self, job_id: str, client_id: str, total_clients: int, vector: bytes) -> dict[str, Any]:
        """Report with a (masked) statistics vector as the raw body: little-endian uint64 values."""
        query = urlencode({"jobId": job_id, "clientId": client_id, "totalClients": total_clients})
        return await self._request("POST", f"/api/update?{query}", data=vector)

    async def register_key(
        self,
        job_id: str,
        client_id: str,
        total_clients: int,
        public_key: str,
        schema: list[dict[str, Any]] | None = None,
        *,
        encryption_key: str,
        max_rows: int | None = None,
        min_clients: int | None = None,
        round_timeout: float | None = None,
        deadline: str | float | None = None,
    ) -> dict[str, Any]:
        """Register this client's two X25519 public keys (base64) for a secure-sum job: ``public_key`` for
        mask agreement, ``encryption_key`` for the share bundles its peers seal for it. The first
        registration creates the job (with ``schema``, ``min_clients``, ``round_timeout``, ``deadline``)."""
        body: dict[str, Any] = {
            "clientId": client_id,
            "totalClients": total_clients,
            "publicKey": public_key,
            "encryptionKey": encryption_key,
        }
        optional = {
            "schema": schema,
            "maxRows": max_rows,
            "minClients": min_clients,
            "roundTimeout": round_timeout,
            "deadline": deadline,
        }
        body |= {name: value for name, value in optional.items() if value is not None}
        return await self._request("POST", f"{self._job(job_id)}/keys", json_body=body)

    async def keys(self, job_id: str) -> dict[str, Any]:
        """The rounds of a secure-sum job: ``round``, ``participants`` (U1, once the keys round closed),
        ``keys`` as [{clientId, publicKey, encryptionKey}]."""
        return await self._request("GET", f"{self._job(job_id)}/keys")

    async def post_shares(self, job_id: str, client_id: str, shares: dict[str, bytes]) -> dict[str, Any]:
        """Post this client's sealed share bundles (recipient -> bundle), one for every member of U1."""
        bundles = [{"to": to, "ciphertext": base64.b64encode(b).decode("ascii")} for to, b in sorted(shares.items())]
        return await self._request(
            "POST", f"{self._job(job_id)}/shares", json_body={"clientId": client_id, "shares": bundles}
        )

    async def shares_for(self, job_id: str, client_id: str) -> dict[str, Any]:
        """The bundles sealed for ``client_id`` by the members of U2 (``sharers``), once the shares round closed."""
        return await self._request("GET", f"{self._job(job_id)}/shares/{quote(client_id, safe='')}")

    async def unmask_request(self, job_id: str) -> dict[str, Any]:
        """What the unmask round asks: ``survivors`` (seed shares wanted) and ``dropped`` (key shares wanted)."""
        return await self._request("GET", f"{self._job(job_id)}/unmask")

    async def post_unmask(
        self,
        job_id: str,
        client_id: str,
        seed_shares: dict[str, tuple[int, bytes]],
        key_shares: dict[str, tuple[int, bytes]],
    ) -> dict[str, Any]:
        """Answer the unmask round with this client's shares (peer -> (index, value))."""

        def entries(shares: dict[str, tuple[int, bytes]]) -> list[dict[str, Any]]:
            return [
                {"of": of, "index": index, "value": base64.b64encode(value).decode("ascii")}
                for of, (index, value) in sorted(shares.items())
            ]

        body = {"clientId": client_id, "selfMaskShares": entries(seed_shares), "keyShares": entries(key_shares)}
        return await self._request("POST", f"{self._job(job_id)}/unmask", json_body=body)

    async def close_job(self, job_id: str) -> dict[str, Any]:
        """Close the job's collection (its secure-sum round in progress) now, by the deadline's rule (admins)."""
        return await self._request("POST", f"{self._job(job_id)}/close")

    async def wait_for_round(self, job_id: str, after: str, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109 - the documented API
        """Wait until the secure-sum round ``after`` (keys, shares, inputs, unmask) has closed, following
        events, and return the job's rounds (as keys()); OrchestratorError if the job ends before (FAILED,
        CANCELLED: its reason), JobNotFoundError if it expired."""
        target = _ROUNDS.index(after)
        async with asyncio.timeout(timeout):
            rounds = await self.keys(job_id)
            if _ROUNDS.index(rounds["round"]) > target:
                return rounds
            async for event in self.watch(job_id):
                if event.get("type") == "job.expired" or (event.get("type") == "snapshot" and not event.get("job")):
                    raise JobNotFoundError(404, "job_not_found", f"job {job_id} expired or vanished")
                job = event.get("job") or {}
                status = event.get("status") or job.get("status")
                if status in FINAL_STATUSES and status != "COMPLETED":
                    reason = event.get("reason") or job.get("failureReason") or ""
                    raise OrchestratorError(409, "job_not_collecting", f"job {job_id} is {status}: {reason}")
                if event.get("type") in ("round.closed", "snapshot", "job.aggregating", "job.completed"):
                    rounds = await self.keys(job_id)
                    if _ROUNDS.index(rounds["round"]) > target or rounds["status"] in FINAL_STATUSES:
                        if rounds["status"] in FINAL_STATUSES - {"COMPLETED"}:
                            raise OrchestratorError(409, "job_not_collecting", f"job {job_id} is {rounds['status']}")
                        return rounds
        raise AssertionError("watch() does not end")  # pragma: no cover

    def _job(self, job_id: str) -> str:
        return f"/api/jobs/{quote(job_id, safe='')}"

    async def status(self, job_id: str) -> dict[str, Any]:
        """The job's status in the original shape (``status``, ``message``, ``progress``, ``jobInfo``...)."""
        return await self._request("GET", f"/api/job-status/{quote(job_id, safe='')}")

    async def job(self, job_id: str) -> dict[str, Any]:
        """The full job: clients with their report times, timestamps, version, result."""
        return await self._request("GET", f"/api/jobs/{quote(job_id, safe='')}")

    async def watch(self, job_id: str, *, since: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The job's events as they happen, starting with a snapshot (or, with ``since``, the events
        after that version). Reconnects by itself and resumes from the last version seen, so no event is
        skipped or repeated; stops only when the caller stops iterating."""
        backoff = Backoff(0.2, self.max_backoff)
        while True:
            url = self._ws_url(f"/ws/jobs/{quote(job_id, safe='')}", since)
            try:
                async with self.session.ws_connect(url, heartbeat=30, headers=self.auth) as ws:
                    backoff.reset()
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        event = json.loads(message.data)
                        version = event.get("version")
                        if not isinstance(version, int):
                            continue
                        if event.get("type") != "snapshot" and since is not None and version <= since:
                            continue
                        since = version
                        yield event
                    logger.info(
                        "Event stream of %s closed (%s); resuming after version %s", job_id, ws.close_code, since
                    )
            except aiohttp.WSServerHandshakeError as e:
                if e.status not in _RETRY_STATUSES:
                    raise OrchestratorError(e.status, "websocket_refused", e.message) from e
                logger.info("Event stream of %s refused with %d; retrying", job_id, e.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                logger.info("Event stream of %s lost (%s); reconnecting", job_id, e)
            await asyncio.sleep(backoff.next())

    async def wait_for_completion(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109 - the documented API
        """Wait until the job is COMPLETED, FAILED or CANCELLED and return its status; TimeoutError after
        ``timeout`` seconds. Follows events instead of polling."""
        seen = False
        async with asyncio.timeout(timeout):
            async for event in self.watch(job_id):
                kind, status = event.get("type"), event.get("status")
                if kind == "snapshot":
                    status = (event.get("job") or {}).get("status")
                    if event.get("job") is None and seen:
                        kind = "job.expired"
                    seen = seen or event.get("job") is not None
                else:
                    seen = True
                if kind == "job.expired":
                    raise JobNotFoundError(404, "job_not_found", f"job {job_id} expired before it finished")
                if status in FINAL_STATUSES:
                    return await self.status(job_id)
        raise AssertionError("watch() does not end")  # pragma: no cover

    def _ws_url(self, path: str, since: int | None) -> str:
        base = self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}{path}" + (f"?since={since}" if since is not None else "")

    async def _request(
        self, method: str, path: str, json_body: Any = None, data: bytes | None = None
    ) -> dict[str, Any]:
        # A Retry-After is honoured up to a minute, beyond the cap of our own waits.
        backoff = Backoff(0.2, self.max_backoff, retry_after_cap=60.0)
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                headers = {**self.auth, **({"Content-Type": "application/octet-stream"} if data is not None else {})}
                async with self.session.request(
                    method, self.base_url + path, json=json_body, data=data, headers=headers, timeout=self.timeout
                ) as resp:
                    try:
                        body = await resp.json(content_type=None)
                    except (json.JSONDecodeError, aiohttp.ContentTypeError):
                        body = {"error": {"code": "bad_response", "message": (await resp.text())[:200]}}
                    if resp.status < 400:
                        return body  # type: ignore[no-any-return]
                    if resp.status in _RETRY_STATUSES and not last:
                        await asyncio.sleep(backoff.next(retry_after_seconds(resp.headers.get("Retry-After"))))
                        continue
                    raise _error(resp.status, body)
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                if last:
                    raise
                logger.info("%s %s failed (%s); retrying", method, path, e)
                await asyncio.sleep(backoff.next())
        raise AssertionError("unreachable")  # pragma: no cover


def _error(status: int, body: Any) -> OrchestratorError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "error")), str(error.get("message", ""))
    else:  # the original's job-status 404: {"error": "Unknown jobId J"}
        code, message = str(body.get("code", "error")) if isinstance(body, dict) else "error", str(error)
    cls = JobNotFoundError if code == "job_not_found" else OrchestratorError
    return cls(status, code, message, body)
