"""Who gets a connection: a cap per client IP, a reserve of file descriptors, and logs that stay short
when the process runs out of them."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import time
from collections import Counter
from http import HTTPStatus
from typing import Any

from orchestrator.metrics import Metrics
from orchestrator.settings import Settings

logger = logging.getLogger("orchestrator.http")

# What asyncio's accept loop reports (and then pauses accepting for a second) when the process is out of them.
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def raw_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 response in the API's error shape, for answers given outside any request handler."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        + (f"Retry-After: {retry_after}\r\n" if retry_after is not None else "")
        + "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class Throttled:
    """One log line per ``interval`` seconds at most; the next line says how many were held back."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next = 0.0
        self._held = 0

    def log(self, level: int, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            message += " (%d more since the last such line)"
            args = (*args, self._held)
        self._held = 0
        self._next = now + self.interval
        logger.log(level, message, *args)


def descriptor_limit() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


class Edge:
    """State shared by every connection of one listener: open connections per IP, the descriptor
    ceiling, and the answers given to connections it refuses."""

    def __init__(self, settings: Settings, metrics: Metrics, fd_limit: int | None = None) -> None:
        self.metrics = metrics
        self.header_timeout = settings.http_header_timeout_seconds
        self.body_timeout = settings.http_body_timeout_seconds
        self.per_ip = settings.max_connections_per_ip
        # Behind a proxy every connection comes from it: the cap would count them all as one client.
        self.uncapped = frozenset(settings.trusted_proxies)
        limit = fd_limit if fd_limit is not None else descriptor_limit()
        # Descriptors are handed out lowest first: an accepted socket numbered at or above this ceiling
        # means fewer than the reserve are left for Redis, outbound calls and log files.
        self.fd_limit = limit
        self.fd_reserve = min(settings.fd_reserve, limit // 4) if limit else 0
        self.fd_ceiling = limit - self.fd_reserve if limit and self.fd_reserve else None
        self.open: Counter[str] = Counter()
        self.shutting_down = False  # the listener is closed
        # When refusing for want of descriptors began, and last happened: "accepting again" is said once,
        # a second after the last refusal, not at every accept in between.
        self.starved_since: float | None = None
        self.last_starved = 0.0
        self.refusals = {
            "descriptors": raw_response(
                503,
                "server_busy",
                "The server is short of file descriptors; retry shortly.",
                retry_after=settings.retry_after_seconds,
            ),
            "per_ip_limit": raw_response(
                429,
                "too_many_connections",
                f"This address already has {self.per_ip} connections open (MAX_CONNECTIONS_PER_IP).",
                retry_after=settings.retry_after_seconds,
            ),
        }
        self.header_timeout_answer = raw_response(
            408, "request_timeout", f"The request headers did not arrive within {self.header_timeout:g} s."
        )
        self._refusal_logs = {reason: Throttled() for reason in self.refusals}
        self.accept_log = Throttled()
        self.timeout_log = Throttled()
        self.protocol_error_log = Throttled()

    def refusal(self, fd: int, ip: str | None) -> bytes | None:
        """The answer for a connection that is refused (counted and logged), or None."""
        if self.fd_ceiling is not None and fd >= self.fd_ceiling:
            reason = "descriptors"
            self.starving()
            self._refusal_logs[reason].log(
                logging.WARNING,
                "Refusing new connections with 503: descriptor %d is among the last %d of the %d allowed "
                "(FD_RESERVE); open connections are still served",
                fd,
                self.fd_reserve,
                self.fd_limit,
            )
        elif ip is not None and self.per_ip and self.open[ip] >= self.per_ip and ip not in self.uncapped:
            reason = "per_ip_limit"
            self._refusal_logs[reason].log(
                logging.WARNING,
                "Refusing a connection from %s: %d already open (MAX_CONNECTIONS_PER_IP)",
                ip,
                self.per_ip,
            )
        else:
            return None
        self.metrics.connections_refused.labels(reason).inc()
        return self.refusals[reason]

    def opened(self, ip: str | None) -> None:
        if ip is not None:
            self.open[ip] += 1
        self.metrics.connections_open.inc()
        if self.starved_since is not None and time.monotonic() - self.last_starved >= 1.0:
            logger.info("Accepting connections again (refused some for %.1f s)", self.last_starved - self.starved_since)
            self.starved_since = None

    def closed(self, ip: str | None) -> None:
        if ip is not None:
            left = self.open[ip] - 1
            if left > 0:
                self.open[ip] = left
            else:
                del self.open[ip]
        self.metrics.connections_open.dec()

    def starving(self) -> None:
        self.last_starved = time.monotonic()
        if self.starved_since is None:
            self.starved_since = self.last_starved

    def handle_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> bool:
        """True when ``context`` was asyncio's accept loop running out of descriptors (or memory), now
        one throttled line; asyncio itself stops accepting for a second and tries again."""
        exc = context.get("exception")
        if self.shutting_down and "_start_serving" in str(context.get("message")):
            # The retry asyncio scheduled after a failed accept(), run after the listener closed.
            logger.debug("Ignored a retry of accept() on the closed listener: %s", exc)
            return True
        if not (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES and "socket" in context):
            return False
        self.starving()
        self.metrics.connections_refused.labels("accept_failed").inc()
        self.accept_log.log(
            logging.WARNING,
            "Cannot accept connections: %s; new ones wait in the backlog, open ones are still served",
            exc.strerror or exc,
        )
        return True
