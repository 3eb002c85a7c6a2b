"""Redis refusing commands for a state of its own, and logging it once per episode.

Out of memory, a read-only replica, a failed snapshot, too few replicas, a busy script, a dataset still
loading, a master that is down: Redis answers, but says no to a write (to any command, for BUSY and LOADING).
Like unreachability this is a condition of the server, not of the request, so callers get 503 with
Retry-After; reads Redis still serves keep working. Every request would otherwise log it: the episode log
says what Redis said when the refusals start, again only every ``relog_seconds`` while they last, and once
when an operation it refused succeeds again.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

logger = logging.getLogger("orchestrator.store")

# The error code Redis starts its reply with -> what it means, in words a client may be shown.
REFUSALS = {
    "OOM": "Redis is out of memory (maxmemory reached)",
    "READONLY": "Redis is a read-only replica",
    "MISCONF": "Redis cannot persist its data (a failed snapshot)",
    "NOREPLICAS": "Redis has too few replicas to accept writes",
    "BUSY": "Redis is busy running a script",
    "LOADING": "Redis is loading its dataset",
    "MASTERDOWN": "Redis has lost its master",
}

# redis-py prefixes the error of a pipelined command with this (and the error's args, as a tuple).
_PIPELINE_PREFIX = "of pipeline caused error: "


def refusal_code(error: RedisError) -> str | None:
    """The code (OOM, READONLY, ...) when Redis refused the command for a state of its own, else None.

    redis-py turns the codes it knows into classes (OutOfMemoryError, ReadOnlyError, BusyLoadingError,
    MasterDownError) with ``status_code`` set and the code cut from the message; the others (MISCONF,
    NOREPLICAS, BUSY) come as a ResponseError whose message starts with the code. An error inside a Lua
    script carries the code of the command that failed in it (Redis 7: "OOM command not allowed when used
    memory > 'maxmemory'. script: <sha>, on @user_script:1."); an error the script raised itself starts
    with ERR (or the script's own words), so it stays a bug."""
    code = getattr(error, "status_code", None)
    if code is None:
        head = said(error)
        code = head.partition(" ")[0]
    return code if code in REFUSALS else None


def said(error: RedisError) -> str:
    """What Redis replied, with its code, without the prefix redis-py adds to a pipelined command's error."""
    text = str(error)
    if _PIPELINE_PREFIX in text:
        text = text.rpartition(_PIPELINE_PREFIX)[2].strip("(),'\"")
    code = getattr(error, "status_code", None)
    return f"{code} {text}" if code and not text.startswith(code) else text


class RefusalLog:
    """Logs an episode of refusals rather than each one (see the module's docstring)."""

    def __init__(self, relog_seconds: float = 60.0) -> None:
        self.relog_seconds = relog_seconds
        self.active = False
        self._code = ""
        self._operations: set[str] = set()
        self._count = 0
        self._since = 0.0
        self._logged_at = 0.0

    def refused(self, operation: str, code: str, text: str) -> None:
        now = time.monotonic()
        if not self.active or code != self._code:
            self.active, self._code, self._since, self._logged_at, self._count = True, code, now, now, 0
            self._operations.clear()
            logger.error(
                "Redis refuses commands (first: %s): %s; requests that need them get 503 with Retry-After until "
                "it accepts them again",
                operation,
                text,
            )
        elif now - self._logged_at >= self.relog_seconds:
            self._logged_at = now
            logger.error(
                "Redis still refuses commands (%d refused in %.0f s): %s", self._count + 1, now - self._since, text
            )
        self._operations.add(operation)
        self._count += 1

    def accepted(self, operation: str) -> None:
        """An operation succeeded: if Redis had refused that one, the episode is over."""
        if operation in self._operations:
            logger.warning(
                "Redis accepts %s again, after %d refused command(s) (%s) over %.1f s",
                operation,
                self._count,
                self._code,
                time.monotonic() - self._since,
            )
            self.active = False
            self._operations.clear()
