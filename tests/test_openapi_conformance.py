"""What the service sends is what its models say: every response of the main flows converts (strictly) to the
model the route table names for its status, and every event a full job flow publishes, and every message the
sockets send, to its event Struct. On fakeredis and the real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from orchestrator.api_routes import ROUTES
from orchestrator.securesum.masking import encode_key, generate_private_key, public_key_bytes
from orchestrator.typedefs import STORE
from orchestrator.wire import events, responses
from tests.fake_coordinator import FakeCoordinator
from tests.support import DETAILED_SCHEMA, final_status, new_keys

Client = TestClient[Any, Any]
MODELS = {(route.method, route.path): route.replies for route in ROUTES}
OUTPUT = [1000, 54, 240, 135.6, 90, 135, 180, 1000, 750, 900]


def encryption() -> dict[str, str]:
    return {"encryptionKey": new_keys()["encryptionKey"]}


def conforms(method: str, path: str, status: int, body: Any) -> None:
    reply = MODELS[method, path].get(status)
    model = reply.model if reply is not None else responses.Error  # security.policy's refusals
    if isinstance(model, dict):  # written out: the original's 404 or the Error shape
        model = responses.LegacyNotFound if isinstance(body.get("error"), str) else responses.Error
    msgspec.convert(body, model, strict=True)


async def call(client: Client, method: str, path: str, url: str, **kwargs: Any) -> Any:
    resp = await client.request(method, url, **kwargs)
    body = await resp.json()
    conforms(method, path, resp.status, body)
    return body


async def test_responses_of_the_main_flows_conform(client: Client) -> None:
    schema = [
        {"featureName": "a", "dataType": "BOOLEAN", "offset": 0, "length": 2, "fields": ["numOfNotNull", "numOfTrue"]}
    ]
    update = "/api/update"
    for body in (
        {"jobId": "f1", "clientId": "c1", "totalClients": 2, "schema": schema},
        {"jobId": "f1", "clientId": "c1", "totalClients": 2},
        {"jobId": "f1", "clientId": "c2", "totalClients": 9},
        {"jobId": "f1", "clientId": 5, "totalClients": 2},
        {"jobId": "f1", "clientId": "c1", "totalClients": 2, "schema": [{"name": "x", "dataType": "NUMERIC"}]},
    ):
        await call(client, "POST", update, update, json=body)
    await call(client, "POST", update, update, data=b"x", headers={"Content-Type": "application/octet-stream"})
    for path, url in [
        ("/", "/"),
        ("/api/job-status/{jobId}", "/api/job-status/f1"),
        ("/api/job-status/{jobId}", "/api/job-status/nope"),
        ("/api/jobs", "/api/jobs?limit=1"),
        ("/api/jobs", "/api/jobs?limit=0"),
        ("/api/jobs/{jobId}", "/api/jobs/f1"),
        ("/api/jobs/{jobId}", "/api/jobs/nope"),
        ("/api/whoami", "/api/whoami"),
        ("/api/audit", "/api/audit?limit=5"),
        ("/api/audit", "/api/audit?before=x"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
        ("/api/openapi.json", "/api/openapi.json"),
    ]:
        await call(client, "GET", path, url)
    listed = await call(client, "GET", "/api/jobs", "/api/jobs?limit=1")
    await call(client, "GET", "/api/jobs", f"/api/jobs?limit=1&cursor={listed['nextCursor'] or ''}")
    await call(client, "POST", "/api/ws-ticket", "/api/ws-ticket")
    retry = "/api/jobs/{jobId}/deliveries/retry"
    await call(client, "POST", retry, "/api/jobs/f1/deliveries/retry")
    await call(client, "POST", retry, "/api/jobs/nope/deliveries/retry")
    callback = "/api/smpc/callback/{jobId}"
    await call(client, "POST", callback, "/api/smpc/callback/f1?token=t", json={"status": "COMPLETED"})
    await call(client, "POST", callback, "/api/smpc/callback/f1?token=t", json={"status": "MAYBE"})
    cancel = "/api/jobs/{jobId}/cancel"
    await call(client, "POST", cancel, "/api/jobs/f1/cancel", json={"reason": "test"})
    await call(client, "POST", cancel, "/api/jobs/f1/cancel")
    await call(client, "POST", cancel, "/api/jobs/nope/cancel", json={"reason": 7})
    status = await call(client, "GET", "/api/job-status/{jobId}", "/api/job-status/f1")
    assert status["status"] == "CANCELLED"
    await call(client, "GET", "/api/jobs/{jobId}", "/api/jobs/f1")


async def test_key_round_responses_conform(client: Client) -> None:
    keys = "/api/jobs/{jobId}/keys"
    schema = [{"name": "age", "dataType": "NUMERIC", "bounds": [0, 120]}]
    for client_id in ("a", "a", "b", "c"):
        key = encode_key(public_key_bytes(generate_private_key()))
        body = {"clientId": client_id, "totalClients": 2, "publicKey": key, **encryption(), "schema": schema}
        await call(client, "POST", keys, "/api/jobs/k1/keys", json=body)
    await call(client, "POST", keys, "/api/jobs/k2/keys", json={"clientId": "a", "totalClients": 2})
    round_ = await call(client, "GET", keys, "/api/jobs/k1/keys")
    assert round_["complete"]
    await call(client, "GET", keys, "/api/jobs/nope/keys")
    await call(client, "GET", "/api/job-status/{jobId}", "/api/job-status/k1")
    await call(client, "GET", "/api/jobs/{jobId}", "/api/jobs/k1")


async def _read(ws: Any, into: list[str], until: Callable[[list[str]], bool]) -> None:
    while not until(into):
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.TEXT, message
        into.append(message.data)


async def test_every_event_of_full_flows_conforms(
    agg_client: Callable[..., Any], coordinator: FakeCoordinator, tmp_path: Any
) -> None:
    client = await agg_client(enable_filesystem_saving=True, results_save_path=str(tmp_path / "out"))
    channel = client.app[STORE].keys.events_channel
    pubsub = client.app[STORE].redis.pubsub()
    await pubsub.subscribe(channel)
    while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
        pass  # publications reach us once Redis confirms the subscription
    coordinator.outputs["full"] = OUTPUT
    coordinator.poll_replies["bad"] = [(200, {"jobId": "bad", "computationType": "sum", "status": "FAILED"})]
    all_messages: list[str] = []
    job_messages: list[str] = []
    async with client.ws_connect("/ws") as every, client.ws_connect("/ws/jobs/full") as one:
        await _read(every, all_messages, lambda got: len(got) >= 1)
        await _read(one, job_messages, lambda got: len(got) >= 1)
        for job in ("full", "bad"):
            for i in range(3):
                body = {"jobId": job, "clientId": f"c{i}", "totalClients": 3, "schema": DETAILED_SCHEMA}
                assert (await client.post("/api/update", json=body)).status == 200
            await final_status(client, job)
        await call(
            client, "POST", "/api/update", "/api/update", json={"jobId": "x", "clientId": "a", "totalClients": 2}
        )
        await call(client, "POST", "/api/jobs/{jobId}/cancel", "/api/jobs/x/cancel")
        schema: list[dict[str, Any]] = [{"name": "age", "dataType": "NUMERIC", "bounds": [0, 120]}]
        for client_id in ("a", "b"):
            key = encode_key(public_key_bytes(generate_private_key()))
            body = {"clientId": client_id, "totalClients": 2, "publicKey": key, **encryption(), "schema": schema}
            await call(client, "POST", "/api/jobs/{jobId}/keys", "/api/jobs/k/keys", json=body)
        delivered = '"type": "delivery.succeeded"'
        await _read(every, all_messages, lambda got: '"type":"keys.complete"' in got[-1].replace(" ", ""))
        await _read(one, job_messages, lambda got: delivered in got[-1] or delivered.replace(" ", "") in got[-1])
        await one.send_str("ping")
        await _read(one, job_messages, lambda got: got[-1] == '{"type":"pong"}')
    for done in ("full", "bad"):
        await call(client, "GET", "/api/job-status/{jobId}", f"/api/job-status/{done}")
        await call(client, "GET", "/api/jobs/{jobId}", f"/api/jobs/{done}")
    published = []
    while (message := await pubsub.get_message(timeout=0.2)) is not None:
        published.append(message["data"])
    await pubsub.aclose()
    kinds = {msgspec.json.decode(raw, type=events.JobEvent, strict=True).__struct_config__.tag for raw in published}
    assert kinds >= {
        "job.created",
        "client.done",
        "job.aggregating",
        "job.completed",
        "job.failed",
        "job.cancelled",
        "keys.registered",
        "keys.complete",
        "delivery.succeeded",
    }, kinds
    for raw in all_messages:
        msgspec.json.decode(raw, type=events.AllSocketMessage, strict=True)
    for raw in job_messages:
        msgspec.json.decode(raw, type=events.JobSocketMessage, strict=True)
    assert json.loads(job_messages[0])["type"] == "snapshot"
