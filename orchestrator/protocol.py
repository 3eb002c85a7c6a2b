"""One HTTP connection as this service runs it: aiohttp's RequestHandler with deadlines for a request's
headers and body, the API's error shape for the errors aiohttp answers before any middleware runs, and
RFC 6455's rule that a client's WebSocket frames are masked.

It reads a few of RequestHandler's private attributes (aiohttp >= 3.14.5, pinned in setup.py);
tests/test_server.py drives every one of them through a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, InvalidURLError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

from orchestrator.edge import Edge
from orchestrator.errors import ApiError

logger = logging.getLogger("orchestrator.http")


class RequestTimeout(ApiError):
    status = 408
    code = "request_timeout"


def describe(status: int, exc: BaseException | None) -> tuple[str, str]:
    """(code, message) for an error aiohttp answers itself: a request it cannot parse, or a handler failure."""
    if status == 504:
        return "gateway_timeout", "The request took too long."
    if status >= 500:
        return "internal_error", "Internal error; it has been logged."
    if isinstance(exc, LineTooLong):
        return "line_too_long", "The request line or a header field is longer than the server accepts (8190 bytes)."
    # The C and the Python parser raise different classes for a bad header or chunk: one code for them.
    code = "bad_request_line" if isinstance(exc, (BadStatusLine, InvalidURLError)) else "malformed_request"
    # aiohttp's message points at the offending byte over three lines; its first line says what is wrong.
    text = (getattr(exc, "message", None) or str(exc) or "Malformed request").strip().splitlines()[0]
    return code, f"Malformed HTTP request: {text.rstrip(':')[:200]}"


class EdgeProtocol(web.RequestHandler):
    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, edge: Edge, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._edge = edge
        self._refused = False
        self._peer_ip: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_bytes = False  # bytes of a request whose headers are not complete yet
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body being waited for
        self._expired: StreamReader | None = None  # a body that did not arrive in time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._edge
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else None
        sock = transport.get_extra_info("socket")
        answer = edge.refusal(sock.fileno() if sock is not None else -1, ip)
        if answer is not None:
            # Answered and closed before a byte is read, so the descriptor is back at once.
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(answer)
            transport.close()
            return
        self._peer_ip = ip
        edge.opened(ip)
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._stop_timers()
        self._edge.closed(self._peer_ip)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._payload_parser is not None or self._upgraded or self._close or self._force_close:
            super().data_received(data)
            return
        queued, awaited = len(self._messages), self._body
        super().data_received(data)
        if awaited is not None and awaited.is_eof():
            self._stop_body_timer()
        if len(self._messages) > queued:
            # A request's headers are complete; its body, if it has one still to come, is timed next.
            self._stop_header_timer()
            body = self._messages[-1][1]
            if not body.is_eof() and self._edge.body_timeout:
                self._body = body
                self._body_timer = self._loop.call_later(self._edge.body_timeout, self._body_late)
        elif data and awaited is None:
            # The first bytes of a request (those that end a body may begin the next one too: then the
            # keep-alive timeout is the only limit on its headers).
            self._request_bytes = True
            if self._header_timer is None:
                self._arm_header_timer()

    def set_parser(self, parser: Any, data_received_cb: Any = None) -> None:
        # The WebSocket upgrade: from here on the connection carries frames, not requests.
        self._stop_timers()
        super().set_parser(MaskedFramesOnly(parser), data_received_cb)  # type: ignore[arg-type]

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        expired = self._expired is not None and request.content is self._expired
        if expired and isinstance(resp, web.StreamResponse):
            resp.force_close()
        result = await super().finish_response(request, resp, start_time)
        if expired:
            # The rest of that body may still come; the connection cannot carry another request.
            self.force_close()
        return result

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        code, text = describe(status, exc)
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            self._edge.metrics.protocol_errors.labels(code).inc()
            self._edge.protocol_error_log.log(
                logging.WARNING, "Malformed request from %s -> %d %s: %s", request.remote, status, code, text
            )
        resp = web.Response(
            status=status,
            text=json.dumps({"error": {"code": code, "message": text}}),
            content_type="application/json",
            headers={"X-Content-Type-Options": "nosniff"},
        )
        resp.force_close()
        return resp

    def _arm_header_timer(self) -> None:
        if self._edge.header_timeout:
            self._header_timer = self._loop.call_later(self._edge.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        self._request_bytes = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _stop_body_timer(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _stop_timers(self) -> None:
        self._stop_header_timer()
        self._stop_body_timer()

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport is None or self._force_close:
            return
        if self._request_in_progress or self._messages:
            # Busy with this client's earlier requests: the next one is timed once they are answered.
            self._arm_header_timer()
            return
        if self._request_bytes:
            # A connection that never sent a byte is closed without an answer (a browser's spare one).
            self._edge.metrics.read_timeouts.labels("headers").inc()
            self._edge.timeout_log.log(
                logging.WARNING,
                "Closing a connection from %s: its request headers took over %g s (408)",
                self._peer_ip,
                self._edge.header_timeout,
            )
            self.transport.write(self._edge.header_timeout_answer)
        self.force_close()

    def _body_late(self) -> None:
        self._body_timer = None
        body, self._body = self._body, None
        if body is None or body.is_eof() or self._force_close:
            return
        edge = self._edge
        edge.metrics.read_timeouts.labels("body").inc()
        edge.timeout_log.log(
            logging.WARNING, "A request body from %s did not arrive within %g s (408)", self._peer_ip, edge.body_timeout
        )
        current = self._current_request
        if (current is not None and current.content is body) or any(queued is body for _, queued in self._messages):
            # Its handler gets the error from its read, and answers 408 through the middleware.
            self._expired = body
            body.set_exception(RequestTimeout(f"The request body did not arrive within {edge.body_timeout:g} s."))
        else:
            # Already answered (aiohttp is reading the rest of the body to discard it): just close.
            self.force_close()


# Handed to the reader in place of an unmasked frame: an opcode RFC 6455 reserves, so aiohttp's own reader
# fails the connection with 1002 (protocol error) as it does for any other malformed frame.
_PROTOCOL_ERROR_FRAME = b"\x8f\x80"


class MaskedFramesOnly:
    """In front of aiohttp's WebSocket reader, which does not check the mask bit: walks the frame
    headers (the payloads are skipped over, not copied) and fails the connection at the first frame a
    client sent unmasked (RFC 6455 section 5.1)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._skip = 0  # bytes left of the current frame (its length, mask key and payload)
        self._held = b""  # the start of a frame header that has not fully arrived
        self._failed = False

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        if self._held:
            data, self._held = self._held + data, b""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            if end - pos < 2:
                self._held = data[pos:]
                break
            second = data[pos + 1]
            if not second & 0x80:
                self._failed = True
                logger.warning("Closing a WebSocket with 1002: the client sent an unmasked frame")
                if pos:
                    self._reader.feed_data(data[:pos])
                return self._reader.feed_data(_PROTOCOL_ERROR_FRAME)  # type: ignore[no-any-return]
            length = second & 0x7F
            extra = 2 if length == 126 else 8 if length == 127 else 0
            if end - pos < 2 + extra:
                self._held = data[pos:]
                break
            if extra:
                length = int.from_bytes(data[pos + 2 : pos + 2 + extra], "big")
            self._skip = 2 + extra + 4 + length
        if self._held:
            data = data[: end - len(self._held)]
            if not data:
                return False, b""
        return self._reader.feed_data(data)  # type: ignore[no-any-return]
