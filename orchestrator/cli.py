"""Command line: `orchestrator serve`, and the client commands `watch` and `update`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from orchestrator import SERVICE_NAME, __version__
from orchestrator.app import create_app
from orchestrator.client import FINAL_STATUSES, OrchestratorClient, OrchestratorError
from orchestrator.logconfig import configure_logging, shutdown_logging
from orchestrator.settings import Settings, SettingsError, client_base_url

logger = logging.getLogger("orchestrator.main")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=f"{SERVICE_NAME} {__version__}")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (settings come from the environment; flags win)")
    serve.add_argument("--host", help="address to bind (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (env PORT, default 5000)")
    serve.add_argument(
        "--redis-url", help="redis://, rediss:// or unix:// URL (env REDIS_URL; default: embedded fakeredis)"
    )

    url_help = "the service's base URL (env ORCHESTRATOR_URL, default http://127.0.0.1:5000)"
    watch = sub.add_parser("watch", help="print a job's events as they happen, one JSON object per line")
    watch.add_argument("job_id")
    watch.add_argument("--url", default=None, help=url_help)
    watch.add_argument("--since", type=int, help="start after this version instead of with a snapshot")
    watch.add_argument("--until-done", action="store_true", help="exit once the job is COMPLETED, FAILED or CANCELLED")

    update = sub.add_parser("update", help="report that a client finished its part of a job")
    update.add_argument("--job", required=True, help="jobId")
    update.add_argument("--client", required=True, help="clientId")
    update.add_argument("--total", required=True, type=int, help="totalClients")
    update.add_argument("--schema", type=Path, help="a JSON file with the job's schema (a list of features)")
    update.add_argument("--url", default=None, help=url_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    command = watch_command if args.command == "watch" else update_command
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return 130
    except OrchestratorError as e:
        print(f"orchestrator: {e.status} {e.code}: {e.message}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as e:
        print(f"orchestrator: cannot reach the service: {e}", file=sys.stderr)
        return 1


async def watch_command(args: argparse.Namespace) -> int:
    async with OrchestratorClient(args.url or client_base_url()) as client:
        async for event in client.watch(args.job_id, since=args.since):
            print(json.dumps(event), flush=True)
            status = event.get("status") or (event.get("job") or {}).get("status")
            if args.until_done and status in FINAL_STATUSES:
                return 0
    return 0


async def update_command(args: argparse.Namespace) -> int:
    schema = None
    if args.schema is not None:
        try:
            schema = json.loads(args.schema.read_text())
        except (OSError, ValueError) as e:
            print(f"orchestrator: cannot read the schema from {args.schema}: {e}", file=sys.stderr)
            return 2
    async with OrchestratorClient(args.url or client_base_url()) as client:
        print(json.dumps(await client.update(args.job, args.client, args.total, schema)))
    return 0


def serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env().with_overrides(host=args.host, port=args.port, redis_url=args.redis_url)
    except SettingsError as e:
        print(f"orchestrator: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_dir, settings.log_level, max_bytes=settings.log_max_bytes, backups=settings.log_backups
    )
    logger.info("Listening on http://%s:%d", settings.host, settings.port)
    # Fan-out allocates a handle and a future per socket per event; with CPython's default young
    # generation threshold (700) the collector keeps walking thousands of live tasks. A larger one
    # halved the p99 of bench/fanout.py at 5,000 subscribers. Start-up objects never die: freeze them.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
            shutdown_timeout=10,
        )
    finally:
        logger.info("Stopped")
        shutdown_logging()
    return 0
