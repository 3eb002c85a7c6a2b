"""URL table: the routes of orchestrator.api_routes (which the OpenAPI document is generated from), and the
dashboard's static files."""

from __future__ import annotations

import importlib
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.api_routes import ROUTES
from orchestrator.staticfiles import static_handler


def handler(name: str) -> Handler:
    """The handler a route names ("module:function" under orchestrator)."""
    module, _, function = name.partition(":")
    return cast(Handler, getattr(importlib.import_module(f"orchestrator.{module}"), function))


def setup_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, handler(route.handler))  # and HEAD, GET's twin
        else:
            app.router.add_route(route.method, route.path, handler(route.handler))
    app.router.add_get("/static/{filename:.+}", static_handler(), name="static")
