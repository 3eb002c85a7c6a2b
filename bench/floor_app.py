"""The floor of this design: an aiohttp app that does only the Redis work, nothing else.

POST /api/update                does the one EVALSHA of ``orchestrator.scripts.UPDATE`` with the same KEYS
                                and ARGV that ``JobStore.record_update`` passes (by name); the body is parsed with a
                                bare ``json.loads`` (no validation), the answer is a small JSON object.
GET  /api/job-status/{jobId}    does the same MULTI/HGETALL/HGETALL/EXEC round trip as
                                ``JobStore.get_job`` and returns the two hashes as JSON.

No middleware, no logging, no metrics, no access log. The Redis client is made by the
orchestrator's own ``create_redis`` so the client library, pool and options are identical.

    python bench/floor_app.py --port 8081 --redis-url redis://127.0.0.1:6379/9 --key-prefix bench:
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import web

from orchestrator import scripts
from orchestrator.connections import create_redis
from orchestrator.keys import Keys
from orchestrator.models import iso_ms
from orchestrator.settings import Settings
from orchestrator.store import script_constants
from orchestrator.validation import schema_digest

# Limits no request reaches: the counters are counted as the orchestrator's are, and nothing is refused.
_UNLIMITED = 1_000_000_000


def create_floor_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    keys = Keys(settings.key_prefix)
    fixed_keys = {"created": keys.jobs_by_created, "audit": keys.audit}
    window_ms, job_window_ms = int(settings.rate_limit_window_seconds * 1000), 3_600_000
    state: dict[str, object] = {}

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = create_redis(settings)
        state["redis"] = client
        constants = script_constants(settings) | {
            "window": window_ms,
            "job_window": job_window_ms,
            "client_jobs": _UNLIMITED,
            "ip_jobs": _UNLIMITED,
        }
        state["update"] = scripts.UPDATE.register(client, {name: constants[name] for name in scripts.UPDATE.config})
        yield
        await client.aclose()

    async def update(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        job_id = data["jobId"]
        client_id = data["clientId"]
        schema = data.get("schema")
        schema_json = "" if schema is None else json.dumps(schema, sort_keys=True, separators=(",", ":"))
        ms = int(time.time() * 1000)
        window = ms // window_ms
        job_window = ms // job_window_ms
        ip = request.remote or "-"
        raw = await state["update"](  # type: ignore[operator]
            keys={
                **keys.round_keys(job_id),
                **fixed_keys,
                "tomb": keys.tombstone(job_id),
                "client_rate": keys.rate_counter("client", client_id, window),
                "ip_rate": keys.rate_counter("ip", ip, window),
                "client_jobs": keys.job_quota_counter("client", client_id, job_window),
                "ip_jobs": keys.job_quota_counter("ip", ip, job_window),
            },
            args={
                "job_id": job_id,
                "client_id": client_id,
                "total": int(data["totalClients"]),
                "schema": schema_json,
                "now_ms": ms,
                "now_iso": iso_ms(ms) or "",
                "deadline": ms + settings.collection_timeout_seconds * 1000,
                "aggregation": "",
                "vector": "",
                "vector_length": "",
                "max_rows": "",
                "schema_digest": schema_digest(schema_json),
                "max_rows_declared": "",
                "creation_refusal": "",
                "client_limit": _UNLIMITED,
                "ip_limit": _UNLIMITED,
                "who": "anonymous",
                "role": "",
                "ip": ip,
                "instance": secrets.token_hex(16),
                "min_clients": int(data["totalClients"]),
                "min_clients_declared": "",
            },
        )
        outcome, _created, _triggered, status, done, total, version, _conflict = raw
        body = {
            "outcome": outcome,
            "jobId": job_id,
            "status": status,
            "doneCount": done,
            "totalClients": total,
            "version": version,
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def job_status(request: web.Request) -> web.Response:
        job_id = request.match_info["jobId"]
        async with state["redis"].pipeline(transaction=True) as pipe:  # type: ignore[attr-defined]
            pipe.hgetall(keys.job(job_id))
            pipe.hgetall(keys.client_times(job_id))
            raw, times = await pipe.execute()
        if not raw:
            return web.Response(status=404, text='{"error":"not found"}', content_type="application/json")
        return web.Response(text=json.dumps({"job": raw, "clientTimes": times}), content_type="application/json")

    app.router.add_post("/api/update", update)
    app.router.add_get("/api/job-status/{jobId}", job_status)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(redis_ctx)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text='{"status":"ok"}', content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--key-prefix", default="bench:")
    args = parser.parse_args()
    settings = Settings(host=args.host, port=args.port, redis_url=args.redis_url, key_prefix=args.key_prefix)
    settings.validate()
    web.run_app(create_floor_app(settings), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
