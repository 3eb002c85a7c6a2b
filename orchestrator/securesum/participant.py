"""A data holder's side of the summed-vector backends: local statistics from rows, then (secure-sum) every
round of the dropout-tolerant secure sum, a layer above the HTTP client (OrchestratorClient).

    async with OrchestratorClient(url) as client:
        result = await submit_statistics(client, "job-1", "hospital-A", 3, schema, "data.csv", wait=True)

The rounds (Bonawitz et al. 2017; README "Secure sum"): register two public keys; split the mask-agreement
private key and a fresh self-mask seed into t-of-|U1| Shamir shares and post one sealed bundle per member
of U1; mask the statistics with the self mask and a pairwise mask per member of U2; answer the unmask round
with seed shares of the survivors and key shares of the dropped, refusing any request that would reveal
both of one client. With a key file every step is kept before it is acted on, so a rerun resumes it.
"""

from __future__ import annotations

import asyncio
import base64
import csv
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.client import JobNotFoundError, OrchestratorClient
from orchestrator.securesum.keyfile import KeyFile
from orchestrator.securesum.layout import RowError, VectorLayout
from orchestrator.securesum.masking import (
    InvalidPublicKey,
    encode_key,
    generate_private_key,
    mask_vector,
    parse_public_key,
    private_key_bytes,
    public_key_bytes,
)
from orchestrator.securesum.shares import (
    InvalidBundle,
    apply_self_mask,
    open_bundle,
    seal_bundle,
    self_mask_seed,
    split_secret,
)

DEFAULT_MAX_ROWS = 1_000_000
Rows = Iterable[Mapping[str, Any]] | str | PathLike[str]


class KeyRoundError(RuntimeError):
    """A round's outcome cannot be trusted (our own key is missing or changed, a key or bundle is unusable)."""


class UnmaskRefused(KeyRoundError):
    """The unmask request would reveal what must stay secret: both shares of one client, shares for a
    client we did not mask with, or another split than the one answered before. Nothing was sent."""


# Where a simulated data holder stops (tests, `orchestrator demo --drop`): after the round named.
STOP_POINTS = ("keys", "shares", "inputs")


def read_rows(rows: Rows, columns: Iterable[str] = ()) -> Iterable[Mapping[str, Any]]:
    """Rows as given, or the rows of a CSV file (header line first), which must have every one of
    ``columns``: a misspelt header would otherwise count the feature as missing in every row."""
    if isinstance(rows, (str, PathLike)):
        with Path(rows).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise RowError(f"{rows}: no column for {', '.join(missing)} (its header: {reader.fieldnames})")
            return list(reader)
    return rows


def local_statistics(schema: list[dict[str, Any]], rows: Rows, total_clients: int, max_rows: int) -> np.ndarray:
    """This client's int64 statistics vector; LayoutError, OverflowRisk or RowError before anything is sent."""
    layout = VectorLayout.from_schema(schema)
    layout.check_capacity(total_clients, max_rows)
    return layout.encode(read_rows(rows, [f.name for f in layout.features]), max_rows=max_rows)


async def submit_statistics(
    client: OrchestratorClient,
    job_id: str,
    client_id: str,
    total_clients: int,
    schema: list[dict[str, Any]],
    rows: Rows,
    *,
    aggregation: str = "secure-sum",
    max_rows: int = DEFAULT_MAX_ROWS,
    wait: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 - the documented API
    key_file: KeyFile | None = None,
    min_clients: int | None = None,
    round_timeout: float | None = None,
    deadline: str | float | None = None,
    stop_after: str | None = None,
) -> dict[str, Any]:
    """Compute this client's statistics of ``rows`` (dicts, or a CSV file's path) and take part in the job:
    'sum' sends them plain; 'secure-sum' takes part in every round (creating the job with ``min_clients``,
    ``round_timeout`` and ``deadline`` if it is the first). With ``wait=True`` return the job's final status.
    Refuses (ValueError) rows that do not fit the schema or a job whose sums could overflow, before sending
    anything. With ``key_file`` each step is kept there and a rerun resumes it; the file is bound to the job
    instance it first registered with (another instance of the jobId is refused before anything is sent).
    ``stop_after`` (one of STOP_POINTS) plays a client that drops out after that round."""
    values = local_statistics(schema, rows, total_clients, max_rows)
    async with asyncio.timeout(timeout):
        if aggregation == "sum":
            answer = await client.update(
                job_id,
                client_id,
                total_clients,
                schema,
                vector=values.view("<u8").tobytes(),
                max_rows=max_rows,
                aggregation="sum",
                min_clients=min_clients,
                deadline=deadline,
            )
        elif aggregation == "secure-sum":
            participant = Participant(client, job_id, client_id, key_file)
            answer = await participant.run(
                values,
                total_clients,
                schema,
                max_rows=max_rows,
                min_clients=min_clients,
                round_timeout=round_timeout,
                deadline=deadline,
                stop_after=stop_after,
            )
            if answer.get("stoppedAfter"):
                return answer
        else:
            raise ValueError(f"aggregation must be 'secure-sum' or 'sum', not {aggregation!r}")
        if wait:
            return await client.wait_for_completion(job_id)
    return answer


class Participant:
    """One data holder in one secure-sum job instance: its keys, its seed and what each round gave it."""

    def __init__(self, client: OrchestratorClient, job_id: str, client_id: str, key_file: KeyFile | None) -> None:
        self.client, self.job_id, self.client_id = client, job_id, client_id
        self.state = key_file
        if key_file is None:
            self.mask_key, self.encryption_key = generate_private_key(), generate_private_key()
            self.seed = self_mask_seed()
        else:
            self.mask_key, self.encryption_key, self.seed = key_file.private_key, key_file.encryption_key, key_file.seed
        self.instance = ""
        self.posted: dict[str, str] = dict(key_file.posted) if key_file else {}
        self.received: dict[str, dict[str, list[Any]]] = dict(key_file.received) if key_file else {}
        self.answered: dict[str, list[str]] | None = key_file.answered if key_file else None

    async def run(
        self,
        values: np.ndarray,
        total_clients: int,
        schema: list[dict[str, Any]],
        *,
        max_rows: int,
        min_clients: int | None,
        round_timeout: float | None,
        deadline: str | float | None,
        stop_after: str | None,
    ) -> dict[str, Any]:
        if self.state is not None and self.state.instance_id is not None:
            self.state.check(await current_instance(self.client, self.job_id))
        registered = await self.client.register_key(
            self.job_id,
            self.client_id,
            total_clients,
            encode_key(public_key_bytes(self.mask_key)),
            schema,
            encryption_key=encode_key(public_key_bytes(self.encryption_key)),
            max_rows=max_rows,
            min_clients=min_clients,
            round_timeout=round_timeout,
            deadline=deadline,
        )
        self.instance = str(registered.get("instanceId") or "")
        if not self.instance:
            raise KeyRoundError(f"the service gave no instanceId for job {self.job_id}")
        if self.state is not None:
            self.state.bind(self.instance)
        if stop_after == "keys":
            return {"stoppedAfter": "keys", **registered}
        keys = await self.client.wait_for_round(self.job_id, "keys")
        participants = self.checked_round(keys, total_clients)
        await self.share(participants, keys)
        if stop_after == "shares":
            return {"stoppedAfter": "shares", "jobId": self.job_id}
        await self.client.wait_for_round(self.job_id, "shares")
        sharers = await self.collect(participants)
        if self.state is not None:
            self.state.mask(values.tobytes())
        masked = await asyncio.to_thread(self.masked, values, sharers, participants)
        answer = await self.client.submit_vector(self.job_id, self.client_id, total_clients, masked.tobytes())
        if stop_after == "inputs":
            return {"stoppedAfter": "inputs", **answer}
        await self.client.wait_for_round(self.job_id, "inputs")
        request = await self.client.unmask_request(self.job_id)
        await self.unmask(request, sharers, int(keys["threshold"]))
        return answer

    def checked_round(self, keys: dict[str, Any], total_clients: int) -> dict[str, dict[str, bytes]]:
        """U1 with each member's raw keys ({"mask", "encryption"}), after checking the round: our own keys are
        in it as registered, the threshold is a majority of totalClients and U1 reaches it."""
        if keys.get("instanceId") != self.instance:
            raise KeyRoundError(f"job {self.job_id} is another instance than the one these keys were registered with")
        try:
            members = {
                e["clientId"]: {
                    "mask": parse_public_key(e["publicKey"]),
                    "encryption": parse_public_key(e["encryptionKey"]),
                }
                for e in keys["keys"]
                if e["clientId"] in set(keys["participants"])
            }
        except (KeyError, TypeError, InvalidPublicKey) as e:
            raise KeyRoundError(f"the keys round returned an unusable key: {e}") from None
        threshold = int(keys["threshold"])
        if 2 * threshold <= total_clients or len(members) < threshold or len(members) != len(keys["participants"]):
            raise KeyRoundError(
                f"the keys round of job {self.job_id} has {len(members)} participants and threshold {threshold} "
                f"of {total_clients}: a secure sum needs a threshold above half the clients, reached"
            )
        own = members.get(self.client_id)
        if own != {"mask": public_key_bytes(self.mask_key), "encryption": public_key_bytes(self.encryption_key)}:
            raise KeyRoundError(f"the keys round does not carry client {self.client_id}'s own keys")
        return members

    async def share(self, participants: dict[str, dict[str, bytes]], keys: dict[str, Any]) -> None:
        """Post one sealed bundle per member of U1: its shares of our mask key and of our seed (the same
        bundles again on a rerun: the service refuses other ones)."""
        if not self.posted:
            bundles = await asyncio.to_thread(self.sealed, participants, int(keys["threshold"]))
            self.posted = {to: base64.b64encode(b).decode("ascii") for to, b in bundles.items()}
            if self.state is not None:
                self.state.keep(posted=self.posted)
        await self.client.post_shares(
            self.job_id, self.client_id, {to: base64.b64decode(text) for to, text in self.posted.items()}
        )

    def sealed(self, participants: dict[str, dict[str, bytes]], threshold: int) -> dict[str, bytes]:
        order = sorted(participants)
        raw_key = private_key_bytes(self.mask_key)
        key_shares = split_secret(raw_key, threshold, len(order))
        seed_shares = split_secret(self.seed, threshold, len(order))
        return {
            peer: seal_bundle(
                self.encryption_key,
                participants[peer]["encryption"],
                job_id=self.job_id,
                instance_id=self.instance,
                sender=self.client_id,
                recipient=peer,
                key_share=key_shares[place],
                seed_share=seed_shares[place],
            )
            for place, peer in enumerate(order)
        }

    async def collect(self, participants: dict[str, dict[str, bytes]]) -> list[str]:
        """U2, after opening the bundle each of its members sealed for us (and keeping the shares)."""
        inbox = await self.client.shares_for(self.job_id, self.client_id)
        sharers = sorted(inbox["sharers"])
        if not set(sharers) <= set(participants) or self.client_id not in sharers:
            raise KeyRoundError(f"the shares round of job {self.job_id} names clients outside the keys round")
        place = sorted(participants).index(self.client_id) + 1
        bundles = {entry["from"]: entry["ciphertext"] for entry in inbox["shares"]}
        for sender in sharers:
            if sender in self.received:
                continue
            if sender not in bundles:
                raise KeyRoundError(f"the service relayed no bundle from {sender}, which completed the shares round")
            try:
                opened = open_bundle(
                    self.encryption_key,
                    participants[sender]["encryption"],
                    job_id=self.job_id,
                    instance_id=self.instance,
                    sender=sender,
                    recipient=self.client_id,
                    ciphertext=base64.b64decode(bundles[sender]),
                )
            except (InvalidBundle, ValueError) as e:
                raise KeyRoundError(f"the bundle from {sender} does not open: {e}") from None
            if opened.key_share[0] != place or opened.seed_share[0] != place:
                raise KeyRoundError(f"the bundle from {sender} holds shares for another holder")
            self.received[sender] = {
                "key": [opened.key_share[0], _b64(opened.key_share[1])],
                "seed": [opened.seed_share[0], _b64(opened.seed_share[1])],
            }
        if self.state is not None:
            self.state.keep(received=self.received)
        return sharers

    def masked(self, values: np.ndarray, sharers: list[str], participants: dict[str, dict[str, bytes]]) -> np.ndarray:
        """x + PRG(b) + a pairwise mask with every other member of U2, mod 2**64."""
        masked = mask_vector(
            values,
            job_id=self.job_id,
            instance_id=self.instance,
            client_id=self.client_id,
            private_key=self.mask_key,
            public_keys={peer: participants[peer]["mask"] for peer in sharers},
        )
        apply_self_mask(
            masked, self.seed, job_id=self.job_id, instance_id=self.instance, client_id=self.client_id, subtract=False
        )
        return masked

    async def unmask(self, request: dict[str, Any], sharers: list[str], threshold: int) -> None:
        """Answer the unmask round, after check_unmask_request has found it safe."""
        survivors, dropped = check_unmask_request(request, self.client_id, sharers, threshold, self.answered)
        if self.answered is None:
            self.answered = {"survivors": survivors, "dropped": dropped}
            if self.state is not None:
                self.state.keep(answered=self.answered)

        def share(peer: str, kind: str) -> tuple[int, bytes]:
            index, value = self.received[peer][kind]
            return int(index), base64.b64decode(value)

        await self.client.post_unmask(
            self.job_id,
            self.client_id,
            {peer: share(peer, "seed") for peer in survivors},
            {peer: share(peer, "key") for peer in dropped},
        )


def check_unmask_request(
    request: dict[str, Any],
    client_id: str,
    sharers: list[str],
    threshold: int,
    answered: dict[str, list[str]] | None,
) -> tuple[list[str], list[str]]:
    """(survivors, dropped) of an unmask request that is safe to answer; UnmaskRefused otherwise. Safe: no
    client is in both lists, together they are exactly U2 (the clients we masked with), we are a survivor,
    the survivors reach the threshold, and a request answered before is asked again unchanged (a server that
    asked for a seed share once and a key share later would have both)."""
    try:
        survivors, dropped = sorted(request["survivors"]), sorted(request["dropped"])
    except (KeyError, TypeError):
        raise UnmaskRefused("the unmask request names no survivors and dropped clients") from None
    if both := sorted(set(survivors) & set(dropped)):
        raise UnmaskRefused(f"the unmask request asks for both shares of {', '.join(both)}: refused")
    if len(set(survivors)) != len(survivors) or sorted({*survivors, *dropped}) != sorted(sharers):
        raise UnmaskRefused(
            "the unmask request does not split the clients we masked with (U2) into survivors and dropped"
        )
    if client_id not in survivors:
        raise UnmaskRefused(f"the unmask request counts {client_id} itself as dropped")
    if len(survivors) < threshold:
        raise UnmaskRefused(f"the unmask request has {len(survivors)} survivors; the threshold is {threshold}")
    if answered is not None and (answered["survivors"], answered["dropped"]) != (survivors, dropped):
        raise UnmaskRefused("the unmask request differs from the one this client answered before")
    return survivors, dropped


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def current_instance(client: OrchestratorClient, job_id: str) -> str | None:
    """The instanceId of the job's key round, or None when there is no such job."""
    try:
        return str((await client.keys(job_id)).get("instanceId") or "") or None
    except JobNotFoundError:
        return None
