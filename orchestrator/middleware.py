"""One middleware around every request: errors to JSON, the access log line, request metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.errors import DomainError, http_headers, http_status
from orchestrator.logconfig import log_access
from orchestrator.security.guard import add_headers
from orchestrator.store import StoreRefused, StoreUnavailable
from orchestrator.typedefs import METRICS, SETTINGS
from orchestrator.waits import redis_wait_scope

logger = logging.getLogger("orchestrator.http")

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any
) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **details}}, status=status, headers=headers)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        with redis_wait_scope():
            response = await handler(request)
    except DomainError as e:
        status = http_status(e)
        logger.warning("%s %s -> %d %s: %s", request.method, request.rel_url.raw_path, status, e.code, e.message)
        response = web.json_response(e.body(), status=status, headers=http_headers(e))
    except StoreRefused as e:
        # Logged once per episode by the store (orchestrator.refusals), not once per request.
        retry_after = request.app[SETTINGS].retry_after_seconds
        response = error_response(
            503,
            "redis_refused",
            f"{e.meaning}: the job store refuses this request for now; retry it (it is safe to repeat).",
            headers={"Retry-After": str(retry_after)},
            retryAfter=retry_after,
            redisError=e.code,
        )
    except StoreUnavailable as e:
        retry_after = request.app[SETTINGS].retry_after_seconds
        logger.error("%s %s: %s", request.method, request.rel_url.raw_path, e)
        response = error_response(
            503,
            "redis_unavailable",
            "The job store is unreachable; retry the request (it is safe to repeat).",
            headers={"Retry-After": str(retry_after)},
            retryAfter=retry_after,
        )
    except web.HTTPException as e:
        if e.status < 400:
            add_headers(request, e)  # a redirect is a page too
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        logger.warning(
            "%s %s -> %d %s: %s", request.method, request.rel_url.raw_path, e.status, code, message or e.reason
        )
        response = error_response(e.status, code, message or e.reason, headers=headers)
    except Exception:
        logger.exception("Unhandled error on %s %s", request.method, request.rel_url.raw_path)
        response = error_response(500, "internal_error", "Internal error; it has been logged.")
    add_headers(request, response)
    elapsed = time.perf_counter() - started
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[METRICS].observe_request(request.method, route, response.status, elapsed)
    if request.app[SETTINGS].access_log:
        log_access(request.method, request.rel_url.raw_path, response.status, elapsed)
    return response
