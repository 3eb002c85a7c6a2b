"""Command line: `orchestrator serve`."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from orchestrator import SERVICE_NAME, __version__
from orchestrator.app import create_app
from orchestrator.logconfig import configure_logging
from orchestrator.settings import Settings, SettingsError

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env().with_overrides(host=args.host, port=args.port, redis_url=args.redis_url)
    except SettingsError as e:
        print(f"orchestrator: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_dir, settings.log_level, max_bytes=settings.log_max_bytes, backups=settings.log_backups
    )
    logger.info("Listening on http://%s:%d", settings.host, settings.port)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )
    return 0
