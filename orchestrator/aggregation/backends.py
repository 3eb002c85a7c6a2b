"""The aggregation backend interface, and the `none` backend.

A backend gets an Attempt (the job's clients, schema, whether the coordinator already has it) and the
time by which it must be done, and returns an Outcome: an aggregated vector to decode, a ready result,
or a failure with a reason. The built-in secure sum plugs in here as another backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


class Backend(Protocol):
    name: str

    async def aggregate(
        self, attempt: Attempt, deadline: float, mark_triggered: Callable[[], Awaitable[bool]]
    ) -> Outcome:
        """Aggregate the job before ``deadline`` (time.time() seconds). Call ``mark_triggered`` once an
        external aggregator has accepted the job, so that a later attempt polls instead of triggering."""
        ...


class NoneBackend:
    """No aggregation: for deployments that only need coordination. The result lists the clients."""

    name = "none"

    async def aggregate(
        self, attempt: Attempt, deadline: float, mark_triggered: Callable[[], Awaitable[bool]]
    ) -> Outcome:
        return Ready({"aggregatedResults": [], "clientList": attempt.clients})
