"""Reading request bodies: the size and media-type limits, and bytes into the typed request (wire/). The
decoding functions are pure functions of bytes and settings, so that a large body can be read in a worker
process (offload.py). Every failure is a DomainError, which pickles whole."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from orchestrator.errors import ApiError, UnsupportedMediaType
from orchestrator.models import KeyRequest, UpdateRequest
from orchestrator.settings import Settings
from orchestrator.validation import parse_json_object
from orchestrator.wire.requests import decode_key, decode_update
from orchestrator.wire.values import check_vector

_JSON_TYPES = {"application/json"}
# What an update sent as application/octet-stream carries in its query string (the body is the vector).
_QUERY_FIELDS = ("jobId", "clientId", "totalClients", "aggregation", "minClients")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 when it is larger than ``limit`` (the app's own limit is the largest any
    route takes)."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await request.read()
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body


def require_json(request: web.Request) -> None:
    content_type = request.content_type
    if content_type not in _JSON_TYPES and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type or 'none'}")


def too_large(limit: int, size: int) -> ApiError:
    return ApiError(
        f"Maximum request body size {limit} exceeded, actual body size {size}",
        code="payload_too_large",
        http_status=413,
    )


def parse_update_body(body: bytes, binary: bool, query: Mapping[str, str], settings: Settings) -> UpdateRequest:
    """An update: JSON, or the vector as the body with the rest in ``query``."""
    now = int(time.time() * 1000)
    if binary:
        data: dict[str, Any] = {name: query.get(name) for name in _QUERY_FIELDS}
        return replace(decode_update(data, now_ms=now), vector=check_vector(body))
    if len(body) > settings.max_body_bytes and b'"vector"' not in body:
        raise too_large(settings.max_body_bytes, len(body))
    data = parse_json_object(body)
    # Only the vector may take the body past MAX_BODY_BYTES.
    vector = data.get("vector")
    rest = len(body) - (len(vector) if isinstance(vector, str) else 0)
    if rest > settings.max_body_bytes:
        raise too_large(settings.max_body_bytes, len(body))
    return decode_update(data, now_ms=now)


def parse_key_body(job_id: str, body: bytes, now_ms: int) -> KeyRequest:
    return decode_key(job_id, parse_json_object(body), now_ms=now_ms)
