"""The client commands of the CLI, `watch`, `update` and `submit`: they talk to a running service over
its API (OrchestratorClient), and print what it answers."""

from __future__ import annotations

import argparse
import json
import os
import sys

from orchestrator.client import FINAL_STATUSES, OrchestratorClient
from orchestrator.securesum.keyfile import KeyFile, KeyFileError
from orchestrator.securesum.participant import submit_statistics
from orchestrator.settings import client_base_url


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
        )
    print(json.dumps(answer, indent=2 if args.wait else None))
    return 0 if not args.wait or answer.get("status") == "COMPLETED" else 1
