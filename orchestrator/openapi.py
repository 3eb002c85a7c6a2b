"""The OpenAPI 3.1 document of the HTTP API, generated once at import from the route table (api_routes) and the
wire models (their JSON Schema, by msgspec), plus what security.policy enforces of each route. Kept true by
tests/test_openapi.py and tests/test_openapi_model.py; fuzzed by tests/test_fuzz.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from orchestrator import __version__
from orchestrator.api_routes import COMPONENTS, ROUTES
from orchestrator.route_spec import JSON, Reply, Route
from orchestrator.security.policy import ACCESS, ANY_HOST, BODY_TYPES

REF = "#/components/schemas/{name}"
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_DESCRIPTION = (
    "Coordinates federated statistics jobs: clients report completion, the orchestrator aggregates when all are "
    "done. The /api/update and /api/job-status endpoints keep the original service's contract. Every request "
    "must name an allowed Host (421 host_not_allowed: localhost, loopback, HOST, PUBLIC_BASE_URL's host, "
    "ALLOWED_HOSTS); a write or a WebSocket handshake whose Origin is another site's, not listed, is 403 "
    "origin_not_allowed; a write whose Content-Type is not its route's is 415 unsupported_media_type. Answered "
    "before any route, in the same Error shape, each closing the connection: 400 bad_request_line, line_too_long "
    "or malformed_request for a request that is not valid HTTP; 408 request_timeout for headers slower than "
    "HTTP_HEADER_TIMEOUT or a body slower than HTTP_BODY_TIMEOUT; 429 too_many_connections past "
    "MAX_CONNECTIONS_PER_IP and 503 server_busy when the process is short of file descriptors (both with "
    "Retry-After, as the connection opens). A WebSocket client's frames must be masked (RFC 6455): an unmasked "
    "one closes the socket with 1002. An integer is written without a fraction (1, not 1.0). The WebSockets' "
    "messages are the components AllSocketMessage (/ws) and "
    "JobSocketMessage (/ws/jobs/{jobId})."
)
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "Claims: sub, role (client, viewer, admin), exp, optional jobs (job-id patterns). Needed when "
    "the service has authentication on (AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE).",
}


def _models(routes: Iterable[Route]) -> list[Any]:
    """Every type the document renders (a dict is a schema as is, None no body), each once, in order."""
    found: list[Any] = []
    for route in routes:
        candidates = [*(route.body or {}).values(), *(reply.model for reply in route.replies.values())]
        candidates += [param.model for param in route.params]
        for model in candidates:
            if model is not None and not isinstance(model, dict) and model not in found:
                found.append(model)
    found += [m for m in COMPONENTS.values() if m not in found]
    return found


class _Schemas:
    """The JSON Schema of each model, with the named ones (Structs, enums) as components."""

    def __init__(self, models: list[Any]) -> None:
        schemas, self.components = msgspec.json.schema_components(models, ref_template=REF)
        self._by_model = list(zip(models, schemas, strict=True))

    def of(self, model: Any) -> dict[str, Any]:
        if isinstance(model, dict):
            return model
        for known, schema in self._by_model:
            if known == model:
                return dict(schema)
        raise KeyError(model)


def _reply(reply: Reply, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.model is not None:
        out["content"] = {reply.media: {"schema": schemas.of(reply.model)}}
    if reply.retry_after:
        out["headers"] = _RETRY_AFTER
    return out


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": route.summary, "operationId": route.handler.rpartition(":")[2]}
    if route.description:
        operation["description"] = route.description
    parameters = []
    for param in route.params:
        parameter = {"name": param.name, "in": param.where, "required": param.required}
        if param.description:
            parameter["description"] = param.description
        parameters.append({**parameter, "schema": schemas.of(param.model)})
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        content = {media: {"schema": schemas.of(model)} for media, model in route.body.items()}
        operation["requestBody"] = {"required": route.body_required, "content": content}
    operation["responses"] = {str(status): _reply(reply, schemas) for status, reply in sorted(route.replies.items())}
    _secure(route, operation)
    return operation


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": REF.format(name="Error")}}},
    }
    if retry_after:
        reply["headers"] = _RETRY_AFTER
    return reply


def _secure(route: Route, operation: dict[str, Any]) -> None:
    """What security.policy requires of the route, and the refusals that come with it."""
    key = (route.method, route.path)
    roles = ACCESS[key]
    responses: dict[str, Any] = operation["responses"]
    if key not in ANY_HOST:
        responses.setdefault("421", _error("The Host names no host this service answers to."))
    if roles is None:
        operation["security"] = []
    else:
        operation["security"] = [{"bearerAuth": []}]
        operation["description"] = (operation.get("description", "") + f" Roles: {', '.join(sorted(roles))}.").strip()
        responses.setdefault("401", _error("No token, or one that is forged, expired or malformed."))
        responses.setdefault("403", _error("The token's role, subject or job patterns do not allow this."))
    if route.method == "POST":
        responses.setdefault("429", _error("Too many writes: retry after Retry-After.", retry_after=True))
        refused = responses.get("403", _error("Refused."))
        origin = " Or (origin_not_allowed) a browser's Origin is another site's, not listed."
        responses["403"] = {**refused, "description": refused["description"] + origin}
        responses.setdefault("408", _error("The body did not arrive within HTTP_BODY_TIMEOUT (request_timeout)."))
        types = " or ".join(sorted(BODY_TYPES[key]))
        responses.setdefault("415", _error(f"The body is not {types} (unsupported_media_type)."))
    if "{jobId}" in route.path:
        # A jobId the router cannot take (one with braces, say) is a plain 404.
        responses.setdefault("404", _error("No such route or job."))
    operation["responses"] = dict(sorted(responses.items()))


def build(routes: Iterable[Route] = ROUTES) -> dict[str, Any]:
    """The document of ``routes``."""
    routes = tuple(routes)
    schemas = _Schemas(_models(routes))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    components = dict(schemas.components)
    for name, model in COMPONENTS.items():
        components.setdefault(name, schemas.of(model))
    for old, new in _COMPONENT_NAMES.items():
        components[new] = {**components.pop(old), "title": new}
    document: dict[str, Any] = _renamed_refs(
        {
            "openapi": "3.1.0",
            "info": {"title": "Computations Orchestrator", "version": __version__, "description": _DESCRIPTION},
            "paths": paths,
            "components": {"schemas": dict(sorted(components.items())), "securitySchemes": {"bearerAuth": _BEARER}},
        }
    )
    return document


# The request bodies keep the component names of the hand-written document that clients generated code from.
_COMPONENT_NAMES = {"UpdateBody": "UpdateRequest", "KeyBody": "KeyRequest"}


def _renamed_refs(node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rpartition("/")[2]
            node = {**node, "$ref": REF.format(name=_COMPONENT_NAMES.get(name, name))}
        return {key: _renamed_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_renamed_refs(item) for item in node]
    return node


OPENAPI: dict[str, Any] = build()
