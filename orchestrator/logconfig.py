"""The log format and handlers: `timestamp LEVEL [component] [computations-orchestrator] message`."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from orchestrator import SERVICE_NAME

LOG_FILE = "computations-orchestrator.log"
FORMAT = f"%(asctime)s %(levelname)s [%(component)s] [{SERVICE_NAME}] %(message)s"


class _ComponentFilter(logging.Filter):
    """Adds ``component``: the last part of the logger name (``orchestrator.store`` -> ``store``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = record.name.rsplit(".", 1)[-1]
        return True


def configure_logging(log_dir: str, level: str, *, max_bytes: int, backups: int) -> Path | None:
    """Log to stderr and to a rotated file in ``log_dir``; returns the file's path, or None if it
    could not be opened (the service then logs to stderr only and says why)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_orchestrator", False):
            root.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(FORMAT)
    component = _ComponentFilter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    path: Path | None = Path(log_dir) / LOG_FILE
    problem = None
    try:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        )
    except OSError as e:
        problem, path = e, None
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(component)
        handler._orchestrator = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if problem is not None:
        logging.getLogger("orchestrator.logging").warning(
            "Cannot write the log file in %s (%s); logging to stderr only", log_dir, problem
        )
    return path
