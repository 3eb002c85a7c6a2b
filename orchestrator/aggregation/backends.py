"""The aggregation backend interface, and the `none` backend.

A backend gets an Attempt (the job's clients, schema, whether the coordinator already has it) and the
time by which it must be done, and returns an Outcome: an aggregated vector to decode, a ready result,
or a failure with a reason. The built-in secure sum plugs in here as another backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.models import Attempt


@dataclass(frozen=True)
class Vector:
    """The element-wise sum of the clients' vectors, to be decoded with the job's schema."""

    values: list[Any]


@dataclass(frozen=True)
class Ready:
    """A final result as it is (nothing to decode)."""

    result: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    reason: str


Outcome = Vector | Ready | Failed


class AttemptContext(Protocol):
    """What a backend may do with the job it aggregates; every call is fenced by the attempt."""

    attempt: Attempt
    deadline: float  # time.time() seconds

    async def mark_triggered(self) -> bool:
        """Record that an external aggregator accepted the job (a later attempt then polls instead of
        triggering again); False if this attempt no longer owns the job."""
        ...

    async def prepare_trigger(self, token: str) -> tuple[str, bool] | None:
        """Before triggering an external aggregator: the token it must present to push its result back
        (``token``, or the one an earlier attempt gave it), and whether an earlier attempt may have
        triggered it already; None if this attempt no longer owns the job."""
        ...

    async def callback_result(self) -> dict[str, Any] | None:
        """What the external aggregator pushed back, if anything yet."""
        ...


class Backend(Protocol):
    name: str

    async def aggregate(self, context: AttemptContext) -> Outcome:
        """Aggregate the job before ``context.deadline``."""
        ...


class NoneBackend:
    """No aggregation: for deployments that only need coordination. The result lists the clients."""

    name = "none"

    async def aggregate(self, context: AttemptContext) -> Outcome:
        return Ready({"aggregatedResults": [], "clientList": context.attempt.clients})
