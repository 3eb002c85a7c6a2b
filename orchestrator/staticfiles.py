"""Where the dashboard's files are."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def static_dir() -> Path:
    """Inside the installed package (setup.py maps the top-level static/ there), or the checkout's static/."""
    installed = _HERE / "static"
    return installed if (installed / "index.html").is_file() else _HERE.parent / "static"
