"""Request bodies into validated requests: pure functions of bytes and settings, so that a large body can be
read in a worker process (offload.py). Every failure is an ApiError, which pickles whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orchestrator.errors import ApiError, ValidationError
from orchestrator.models import KeyRequest, UpdateRequest
from orchestrator.securesum.requests import binary_update, parse_key_request, parse_vector, with_vector_layout
from orchestrator.settings import Settings
from orchestrator.validation import parse_json_object, parse_update


def too_large(limit: int, size: int) -> ApiError:
    return ApiError(
        f"Maximum request body size {limit} exceeded, actual body size {size}",
        code="payload_too_large",
        http_status=413,
    )


def parse_update_body(
    body: bytes, binary: bool, query: Mapping[str, str], settings: Settings
) -> tuple[UpdateRequest, ValidationError | None]:
    """An update (JSON, or the vector as the body with the rest in ``query``), with the layout of the
    summed-vector job it may create and the error that refuses creating it, if any."""
    data: dict[str, Any] = {}
    if binary:
        req = binary_update(query, body)
    else:
        if len(body) > settings.max_body_bytes and b'"vector"' not in body:
            raise too_large(settings.max_body_bytes, len(body))
        data = parse_json_object(body)
        # Only the vector may take the body past MAX_BODY_BYTES.
        vector = data.get("vector")
        rest = len(body) - (len(vector) if isinstance(vector, str) else 0)
        if rest > settings.max_body_bytes:
            raise too_large(settings.max_body_bytes, len(body))
        req = parse_update(data)
        if vector is not None:
            req = replace(req, vector=parse_vector(vector))
    return with_vector_layout(req, data, settings)


def parse_key_body(
    job_id: str, body: bytes, settings: Settings, now_ms: int
) -> tuple[KeyRequest, ValidationError | None]:
    """A key registration, and the error that refuses creating its job, if any."""
    return parse_key_request(job_id, parse_json_object(body), settings, now_ms)
