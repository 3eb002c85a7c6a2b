"""Where the dashboard's files are, and the handler that serves them."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

_HERE = Path(__file__).resolve().parent


def static_dir() -> Path:
    """Inside the installed package (setup.py maps the top-level static/ there), or the checkout's static/."""
    installed = _HERE / "static"
    return installed if (installed / "index.html").is_file() else _HERE.parent / "static"


def static_handler(directory: Path | None = None) -> Handler:
    """Serves the files that were in ``directory`` when the app was made, by their relative path.

    A name not among them is a 404 the error middleware answers as JSON, without touching the file
    system: aiohttp's own static route answers a missing file with an empty 404 of its own, and a
    name the OS refuses (too long, say) with a 500."""
    root = directory or static_dir()
    files = {path.relative_to(root).as_posix(): path for path in root.rglob("*") if path.is_file()}

    async def static_file(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["filename"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    return static_file
