"""The log format and handlers: `timestamp LEVEL [component] [computations-orchestrator] message`.

Logging sits on every request's path (an access line, and a line per client update), so it is kept
cheap: each record is formatted once, on the thread that logs it, by a formatter that builds the
timestamp once per second, and handed to a stdlib QueueHandler. A QueueListener thread writes the lines
to stderr and the rotated log file in batches: at once for a warning or worse, otherwise within a fifth
of a second. No file or stderr write ever runs on the event loop's thread. (Formatting in the listener
instead would make it fight the event loop for the GIL on every record.) The queue is bounded: when the
writer cannot keep up (a stderr that blocks), further lines are dropped and counted, not queued without
end, and the listener says how many when it has caught up; the caller never waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any, TextIO

from orchestrator import SERVICE_NAME
from orchestrator.logfile import RotatingFile

LOG_FILE = "computations-orchestrator.log"
FORMAT = f"%(asctime)s %(levelname)s [%(component)s] [{SERVICE_NAME}] %(message)s"
# Lines queued for the writer at most (some MB of text); past it a line is dropped and counted.
MAX_QUEUED_LINES = 50_000


class LineFormatter(logging.Formatter):
    """FORMAT, built directly: the same text as logging.Formatter(FORMAT), in a fraction of the time."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""

    def line(self, created: float, level: str, component: str, message: str) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d} {level} [{component}] [{SERVICE_NAME}] {message}"

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(record.created, record.levelname, record.name.rsplit(".", 1)[-1], record.getMessage())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class Drops:
    """Lines dropped because the queue was full: counted by the loggers' threads, taken by the listener."""

    def __init__(self) -> None:
        self.lock, self.count = threading.Lock(), 0  # the lock: only to drop a line or to take the count

    def add(self) -> None:
        with self.lock:
            self.count += 1

    def take(self) -> int:
        with self.lock:
            count, self.count = self.count, 0
            return count


class LineQueueHandler(QueueHandler):
    """Formats each record once (LineFormatter), on the caller's thread, and queues its line alone: a
    string, which the garbage collector does not walk, where a queue of records would hold thousands of
    objects for it to walk until the listener's next round."""

    def __init__(self, lines: queue.SimpleQueue[str], wake: threading.Event, drops: Drops, max_lines: int) -> None:
        super().__init__(lines)
        self.line_formatter = LineFormatter()
        self.setFormatter(self.line_formatter)
        self.lines = lines
        self.wake = wake
        self.drops = drops
        self.max_lines = max_lines

    def prepare(self, record: logging.LogRecord) -> str:
        return self.format(record)

    def enqueue(self, record: Any) -> None:
        # A SimpleQueue bounded by its size, not a queue.Queue(maxsize): that takes a lock and a condition
        # on every put (~1.1 us a line more) and would refuse stop()'s sentinel when full. Threads racing
        # here overshoot the bound by a line each at most.
        if self.lines.qsize() < self.max_lines:
            self.lines.put_nowait(record)
        else:
            self.drops.add()

    def enqueue_line(self, created: float, level: str, component: str, message: str) -> None:
        """A line as format() would make it of a record without exception or stack (info_fast's)."""
        self.enqueue(self.line_formatter.line(created, level, component, message))

    def handle(self, record: logging.LogRecord) -> bool:
        # Not Handler.handle: the queue is thread-safe, so emit() needs no lock of the handler's.
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.wake.set()  # written at once; other lines wait for the listener's next round


class LineWriter:
    """On the listener's thread: writes the queued lines to stderr and the log file, in batches."""

    def __init__(self, stderr: TextIO, file: RotatingFile | None, *, max_lines: int = 500) -> None:
        self.stderr = stderr
        self.file = file
        self.max_lines = max_lines
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        lines, self.lines = self.lines, []
        with contextlib.suppress(OSError, ValueError):  # nowhere left to report it
            self.stderr.write("\n".join(lines) + "\n")
            self.stderr.flush()
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.write_lines(lines)

    def close(self) -> None:
        self.flush()
        if self.file is not None:
            self.file.close()


class LineListener(QueueListener):
    """A QueueListener that takes what was queued every ``interval`` seconds, or at once when woken (a
    warning or worse), and has its LineWriter write it in one go. Waking on every line instead would
    switch threads, and take the GIL from the event loop, once per line."""

    def __init__(
        self,
        lines: queue.SimpleQueue[str],
        writer: LineWriter,
        wake: threading.Event,
        drops: Drops,
        *,
        interval: float = 0.2,
    ) -> None:
        super().__init__(lines)
        self.lines = lines
        self.writer = writer
        self.wake = wake
        self.drops = drops
        self.interval = interval
        self.formatter = LineFormatter()  # this thread's own (its timestamp cache)

    def dequeue(self, block: bool) -> Any:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                self.caught_up()
                self.wake.wait(self.interval)
                self.wake.clear()  # whatever was queued before a wake-up is taken next
                continue
            if line is None:  # QueueListener's sentinel: stop() was called
                self.caught_up()  # the last lines, on this thread too
            return line

    def caught_up(self) -> None:
        """The queue is empty: say how many lines were dropped since the last time, and write."""
        if dropped := self.drops.take():
            message = f"{dropped} log lines dropped (the log writer could not keep up)"
            self.writer.add(self.formatter.line(time.time(), "WARNING", "logging", message))
        self.writer.flush()

    def handle(self, record: Any) -> None:
        self.writer.add(record)  # a line (LineQueueHandler.prepare)

    def enqueue_sentinel(self) -> None:
        super().enqueue_sentinel()
        self.wake.set()

    def stop(self) -> None:
        super().stop()
        self.writer.close()


_listener: LineListener | None = None
_handler: LineQueueHandler | None = None
_saved_flags: dict[str, Any] = {}
_access_logger = logging.getLogger("orchestrator.access")
# Per-record work the format does not use: the caller's frame, thread and process names. Switched off
# while our handler is installed (configure_logging), put back by shutdown_logging; never at import.
_FLAGS = {"_srcfile": None, "logThreads": False, "logProcesses": False, "logMultiprocessing": False}


def log_access(method: str, path: str, status: int, seconds: float) -> None:
    """One access log line: `METHOD PATH STATUS DURATIONms`, as INFO from [access]."""
    if _access_logger.isEnabledFor(logging.INFO):
        info_fast(_access_logger, f"{method} {path} {status} {seconds * 1000:.1f}ms")


def info_fast(logger: logging.Logger, message: str) -> None:
    """``logger.info(message)`` for the lines logged on every request: no caller lookup, no %-formatting.
    When this service's handler is the one handler the line would reach, the handler takes the line
    itself (a LogRecord costs more than the rest of the line); otherwise (a test's caplog, a filter, another
    handler) a record goes through the logger's handlers like any other."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is not None and _reaches_only(logger, handler):
        handler.enqueue_line(time.time(), "INFO", logger.name.rsplit(".", 1)[-1], message)
    else:
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None))


def _reaches_only(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether a record of ``logger`` would reach ``handler`` alone, unfiltered."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or any(h is not handler for h in current.handlers):
            return False
        if not current.propagate:
            break
        current = current.parent
    return not handler.filters and handler.level <= logging.INFO


def configure_logging(
    log_dir: str, level: str, *, max_bytes: int, backups: int, max_queued_lines: int = MAX_QUEUED_LINES
) -> Path | None:
    """Log to stderr and to a rotated file in ``log_dir``; returns the file's path, or None if it
    could not be opened (the service then logs to stderr only and says why). At most
    ``max_queued_lines`` wait for the writer; more are dropped, and counted in the log."""
    global _listener, _handler
    shutdown_logging()
    path: Path | None = Path(log_dir) / LOG_FILE
    problem = None
    file = None
    try:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        file = RotatingFile(path, max_bytes, backups)
    except OSError as e:
        problem, path = e, None
    for name, value in _FLAGS.items():
        _saved_flags[name] = getattr(logging, name)
        setattr(logging, name, value)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    wake = threading.Event()
    drops = Drops()
    _listener = LineListener(lines, LineWriter(sys.stderr, file), wake, drops)
    _listener.start()
    handler = LineQueueHandler(lines, wake, drops, max_queued_lines)
    handler._orchestrator = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.addHandler(handler)
    _handler = handler
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if problem is not None:
        logging.getLogger("orchestrator.logging").warning(
            "Cannot write the log file in %s (%s); logging to stderr only", log_dir, problem
        )
    return path


def shutdown_logging() -> None:
    """Remove our handler, writing out what it still holds."""
    global _listener, _handler
    _handler = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_orchestrator", False):
            root.removeHandler(handler)
            handler.close()
    if _listener is not None:
        _listener.stop()
        _listener = None
    for name, value in _saved_flags.items():
        setattr(logging, name, value)
    _saved_flags.clear()
