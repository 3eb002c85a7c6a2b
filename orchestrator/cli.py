"""Command line: `orchestrator serve`, `token` and `demo`, and the client commands `watch`, `update` and `submit`
(commands.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from orchestrator import SERVICE_NAME, __version__, server
from orchestrator.app import create_app
from orchestrator.client import OrchestratorError
from orchestrator.commands import deadline, positive_float, positive_int, submit_command, update_command, watch_command
from orchestrator.logconfig import configure_logging, shutdown_logging
from orchestrator.securesum.demo import DROP_POINTS, DROP_ROUND_TIMEOUT, min_clients_for, run_demo
from orchestrator.securesum.participant import DEFAULT_MAX_ROWS, KeyRoundError
from orchestrator.security.tokens import ROLES, AuthError, bound_claims, issue_token, parse_ttl
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
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen on a non-loopback address without authentication (env INSECURE_NO_AUTH; never in production)",
    )

    token = sub.add_parser("token", help="issue a bearer token signed with AUTH_JWT_SECRET (or AUTH_JWT_SECRET_FILE)")
    token.add_argument("--role", required=True, choices=list(ROLES))
    token.add_argument("--sub", required=True, help="the subject: a client's clientId, or a person's name")
    token.add_argument("--ttl", default="30d", help="lifetime: 30d, 12h, 15m or seconds (default 30d)")
    token.add_argument("--jobs", help="comma-separated job-id patterns the token is limited to (e.g. 'study-*')")

    url_help = "the service's base URL (env ORCHESTRATOR_URL, default http://127.0.0.1:5000)"
    token_help = "a bearer token (env ORCHESTRATOR_TOKEN), for a service with authentication on"
    watch = sub.add_parser("watch", help="print a job's events as they happen, one JSON object per line")
    watch.add_argument("job_id")
    watch.add_argument("--url", default=None, help=url_help)
    watch.add_argument("--token", default=None, help=token_help)
    watch.add_argument("--since", type=int, help="start after this version instead of with a snapshot")
    watch.add_argument("--until-done", action="store_true", help="exit once the job is COMPLETED, FAILED or CANCELLED")

    update = sub.add_parser("update", help="report that a client finished its part of a job")
    update.add_argument("--job", required=True, help="jobId")
    update.add_argument("--client", required=True, help="clientId")
    update.add_argument("--total", required=True, type=int, help="totalClients")
    update.add_argument("--schema", type=Path, help="a JSON file with the job's schema (a list of features)")
    update.add_argument("--url", default=None, help=url_help)
    update.add_argument("--token", default=None, help=token_help)

    submit = sub.add_parser(
        "submit", help="compute a client's statistics from a CSV file and submit them through the secure sum"
    )
    submit.add_argument("--job", required=True, help="jobId")
    submit.add_argument("--client", required=True, help="clientId")
    submit.add_argument("--total", required=True, type=int, help="totalClients")
    submit.add_argument("--schema", required=True, type=Path, help="a JSON file with the job's schema")
    submit.add_argument("--csv", required=True, type=Path, help="the client's rows: a CSV file with a header line")
    submit.add_argument("--aggregation", choices=["secure-sum", "sum"], default="secure-sum")
    submit.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="the job's maxRows (all clients agree)")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the result and print it (a secure sum stays until its unmask round either way)",
    )
    submit.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (default: never)")
    submit.add_argument(
        "--min-clients",
        type=positive_int,
        default=None,
        help="k of n: the job completes with at least this many clients, the others counting as dropped; a "
        "secure sum needs more than half of --total (default: --total, every client)",
    )
    submit.add_argument(
        "--round-timeout",
        type=positive_float,
        default=None,
        help="secure sum: seconds each round waits for the clients it expects before it closes without them "
        "(default: the service's SECURE_SUM_ROUND_TIMEOUT, 300)",
    )
    submit.add_argument(
        "--deadline",
        type=deadline,
        default=None,
        help="when the job's collection closes: an ISO 8601 time (UTC unless it names a zone) or seconds from "
        "now (default: none, the job waits for its clients or its round timeouts)",
    )
    submit.add_argument(
        "--key-file",
        type=Path,
        help="keep this client's secure-sum state for the job here (keys, self-mask seed, the shares it posted "
        "and received, its unmask answer; created if missing, mode 0600), so a rerun after a crash resumes "
        "the round it stopped in",
    )
    submit.add_argument("--url", default=None, help=url_help)
    submit.add_argument("--token", default=None, help=token_help)

    demo = sub.add_parser(
        "demo", help="run simulated data holders through the secure sum, on an embedded service or --url"
    )
    demo.add_argument("--clients", type=int, default=5, help="data holders (2-100, default 5)")
    demo.add_argument("--rows", type=int, default=1000, help="rows per data holder (default 1000)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the synthetic data")
    demo.add_argument("--url", default=None, help="use this running service instead of starting one")
    demo.add_argument("--port", type=int, default=None, help="port of the embedded service (env PORT, default 5000)")
    demo.add_argument("--exit", action="store_true", help="stop the embedded service after the demo")
    demo.add_argument(
        "--drop",
        type=int,
        default=0,
        help="this many holders drop out; the job runs with minClients = clients - drop, which must be more "
        "than half the clients (default 0)",
    )
    demo.add_argument(
        "--drop-at",
        choices=DROP_POINTS,
        default="mixed",
        help="the round after which the dropped holders stop (default mixed: spread over keys, shares, inputs)",
    )
    demo.add_argument(
        "--round-timeout",
        type=positive_float,
        default=None,
        help=f"with --drop: seconds each round waits for the holders it expects (default {DROP_ROUND_TIMEOUT:g})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "token":
        return token_command(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    commands = {"watch": watch_command, "update": update_command, "submit": submit_command, "demo": demo_command}
    try:
        return asyncio.run(commands[args.command](args))
    except KeyboardInterrupt:
        return 130
    except OrchestratorError as e:
        print(f"orchestrator: {e.status} {e.code}: {e.message}", file=sys.stderr)
        return 1
    except TimeoutError:  # before OSError, of which it is a subclass
        print("orchestrator: timed out", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as e:
        print(f"orchestrator: cannot reach the service: {e}", file=sys.stderr)
        return 1
    except (ValueError, KeyRoundError) as e:  # rows, schema or overflow refused before sending
        print(f"orchestrator: {e}", file=sys.stderr)
        return 2


async def demo_command(args: argparse.Namespace) -> int:
    if not 2 <= args.clients <= 100 or not 1 <= args.rows <= 1_000_000:
        print("orchestrator: --clients must be 2-100 and --rows 1-1000000", file=sys.stderr)
        return 2
    if args.drop < 0 or (args.drop and min_clients_for(args.clients, args.drop) is None):
        most = (args.clients - 1) // 2
        print(
            f"orchestrator: --drop {args.drop} of {args.clients} holders: a secure sum needs more than half of "
            f"the holders to stay (minClients = clients - drop > clients / 2), so --drop may be 0-{most}",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings.from_env().with_overrides(port=args.port)
    except SettingsError as e:
        print(f"orchestrator: configuration error: {e}", file=sys.stderr)
        return 2
    if settings.auth_jwt_public_key is not None and settings.auth_jwt_secret is None:
        print("orchestrator: the demo issues its holders' tokens, so it needs AUTH_JWT_SECRET", file=sys.stderr)
        return 2
    secret = settings.auth_jwt_secret
    claims = bound_claims(settings)
    if args.url:
        ok = await demo_against(args.url.rstrip("/"), args, secret, claims)
        return 0 if ok else 1
    if refusal := check_exposure(settings, False):
        print(f"orchestrator: {refusal}", file=sys.stderr)
        return 2
    if args.drop:
        # Rounds close at their deadline on the next sweep: sweep often enough that a round waits about
        # its timeout, not up to a sweep interval more.
        timeout = args.round_timeout or DROP_ROUND_TIMEOUT
        settings = settings.with_overrides(
            aggregation_sweep_seconds=min(settings.aggregation_sweep_seconds, max(timeout / 10, 0.1))
        )
    logging.getLogger("orchestrator").setLevel(logging.WARNING)
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        url = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '') else settings.host}:{settings.port}"
        print(f"Service started on {url} ({settings.redis_label})")
        ok = await demo_against(url, args, secret, claims)
        if not args.exit:
            print(f"\nThe service keeps running: open {url}/dashboard (Ctrl-C to stop).", flush=True)
            await asyncio.Event().wait()
        return 0 if ok else 1
    finally:
        await runner.cleanup()


async def demo_against(url: str, args: argparse.Namespace, secret: str | None, claims: dict[str, str]) -> bool:
    return await run_demo(
        url,
        clients=args.clients,
        rows=args.rows,
        seed=args.seed,
        secret=secret,
        claims=claims,
        drop=args.drop,
        drop_at=args.drop_at,
        round_timeout=args.round_timeout,
    )


def token_command(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"orchestrator: configuration error: {e}", file=sys.stderr)
        return 2
    if settings.auth_jwt_secret is None:
        print("orchestrator: set AUTH_JWT_SECRET or AUTH_JWT_SECRET_FILE to issue tokens", file=sys.stderr)
        return 2
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()] if args.jobs else None
    if args.role == "client" and not jobs:
        print(
            "orchestrator: a client token needs --jobs, the job patterns it may join ('*' for any job)",
            file=sys.stderr,
        )
        return 2
    try:
        claims = bound_claims(settings)
        print(issue_token(settings.auth_jwt_secret, args.sub, args.role, parse_ttl(args.ttl), jobs, **claims))
    except (ValueError, AuthError) as e:
        print(f"orchestrator: {e}", file=sys.stderr)
        return 2
    return 0


def check_exposure(settings: Settings, insecure: bool) -> str | None:
    """Why the service must not start as configured (listening beyond loopback without authentication)."""
    if settings.auth_enabled or is_loopback(settings.host) or insecure or settings.insecure_no_auth:
        return None
    return (
        f"refusing to listen on {settings.host} without authentication: anyone who reaches it could report as "
        "any client. Set AUTH_JWT_SECRET (or AUTH_JWT_SECRET_FILE, AUTH_JWT_PUBLIC_KEY_FILE), listen on "
        "127.0.0.1, or pass --insecure-no-auth"
    )


def warn_exposure(settings: Settings) -> None:
    if settings.auth_enabled:
        return
    if is_loopback(settings.host):
        logger.warning(
            "Authentication is off: listening on %s (loopback) only. Set AUTH_JWT_SECRET to serve others.",
            settings.host,
        )
    else:
        logger.warning(
            "AUTHENTICATION IS OFF and the service listens on %s (--insecure-no-auth): anyone who reaches it "
            "can report as any client, cancel jobs and read every result.",
            settings.host,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env().with_overrides(host=args.host, port=args.port, redis_url=args.redis_url)
    except SettingsError as e:
        print(f"orchestrator: configuration error: {e}", file=sys.stderr)
        return 2
    if refusal := check_exposure(settings, args.insecure_no_auth):
        print(f"orchestrator: {refusal}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_dir, settings.log_level, max_bytes=settings.log_max_bytes, backups=settings.log_backups
    )
    warn_exposure(settings)
    logger.info("Listening on http://%s:%d", settings.host, settings.port)
    # Fan-out allocates a handle and a future per socket per event; with CPython's default young
    # generation threshold (700) the collector keeps walking thousands of live tasks. A larger one
    # halved the p99 of bench/fanout.py at 5,000 subscribers. Start-up objects never die: freeze them.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        asyncio.run(server.serve(create_app(settings), settings.host, settings.port))
    except KeyboardInterrupt:  # before the signal handlers are in place
        pass
    finally:
        logger.info("Stopped")
        shutdown_logging()
    return 0
