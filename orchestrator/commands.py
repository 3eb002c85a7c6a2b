"""The client commands of the CLI, `watch`, `update` and `submit`: they talk to a running service over
its API (OrchestratorClient), and print what it answers."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import datetime

from orchestrator.client import FINAL_STATUSES, OrchestratorClient
from orchestrator.securesum.keyfile import KeyFile, KeyFileError
from orchestrator.securesum.participant import submit_statistics
from orchestrator.settings import client_base_url


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def deadline(text: str) -> str | float:
    """An argparse type: seconds from now (a number), or an ISO 8601 time passed on as written (the service
    reads it, and refuses one in the past)."""
    try:
        float(text)
    except ValueError:
        try:
            datetime.fromisoformat(text)
        except ValueError:
            message = f"not an ISO 8601 time or a number of seconds from now: {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        return text
    return positive_float(text)


def client_for(args: argparse.Namespace) -> OrchestratorClient:
    return OrchestratorClient(
        args.url or client_base_url(), token=args.token or os.environ.get("ORCHESTRATOR_TOKEN") or None
    )


async def watch_command(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
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
    async with client_for(args) as client:
        print(json.dumps(await client.update(args.job, args.client, args.total, schema)))
    return 0


async def submit_command(args: argparse.Namespace) -> int:
    try:
        schema = json.loads(args.schema.read_text())
    except (OSError, ValueError) as e:
        print(f"orchestrator: cannot read the schema from {args.schema}: {e}", file=sys.stderr)
        return 2
    if not args.csv.is_file():
        print(f"orchestrator: no such CSV file: {args.csv}", file=sys.stderr)
        return 2
    if args.aggregation == "sum" and secure_only(args):
        print(f"orchestrator: {secure_only(args)}: for --aggregation secure-sum only", file=sys.stderr)
        return 2
    try:
        key_file = KeyFile.open(args.key_file, args.job) if args.key_file else None
    except KeyFileError as e:
        print(f"orchestrator: {e}", file=sys.stderr)
        return 2
    async with client_for(args) as client:
        answer = await submit_statistics(
            client,
            args.job,
            args.client,
            args.total,
            schema,
            args.csv,
            aggregation=args.aggregation,
            max_rows=args.max_rows,
            wait=args.wait,
            timeout=args.timeout,
            key_file=key_file,
            min_clients=args.min_clients,
            round_timeout=args.round_timeout,
            deadline=args.deadline,
        )
    print(json.dumps(answer, indent=2 if args.wait else None))
    return 0 if not args.wait or answer.get("status") == "COMPLETED" else 1


def secure_only(args: argparse.Namespace) -> str:
    """The secure-sum options given ('' for none): a plain sum's update carries none of them."""
    given = {"--min-clients": args.min_clients, "--round-timeout": args.round_timeout, "--deadline": args.deadline}
    given["--key-file"] = args.key_file
    return ", ".join(flag for flag, value in given.items() if value is not None)
