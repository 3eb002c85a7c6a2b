from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.logconfig import LOG_FILE, configure_logging, info_fast, log_access, shutdown_logging


class RecordingStream(io.StringIO):
    """A stderr that notes which threads wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.current_thread().name)
        return super().write(text)


@pytest.fixture(autouse=True)
def _shutdown() -> Iterator[None]:
    yield
    shutdown_logging()


def recording(monkeypatch: pytest.MonkeyPatch) -> RecordingStream:
    """Our stderr for this test (set in the test itself: pytest sets its own capture again after setup)."""
    stream = RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_lines_reach_stderr_and_the_file_in_the_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = recording(monkeypatch)
    path = configure_logging(str(tmp_path), "INFO", max_bytes=1_000_000, backups=2)
    assert path == tmp_path / LOG_FILE
    logging.getLogger("orchestrator.views").info("Update for job %s recorded", "j1")
    log_access("POST", "/api/update", 200, 0.0012)
    shutdown_logging()
    lines = path.read_text().splitlines()
    assert lines[0].endswith(" INFO [views] [computations-orchestrator] Update for job j1 recorded")
    assert lines[1].endswith(" INFO [access] [computations-orchestrator] POST /api/update 200 1.2ms")
    assert stderr.getvalue().splitlines() == lines


def test_no_write_runs_on_the_logging_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = recording(monkeypatch)
    configure_logging(str(tmp_path), "INFO", max_bytes=1_000_000, backups=2)
    logger = logging.getLogger("orchestrator.test")
    logger.error("an error is written at once, but not by the thread that logs it")
    for i in range(1200):  # more than a batch
        info_fast(logger, f"line {i}")
    shutdown_logging()
    assert threading.current_thread().name not in stderr.writers
    assert stderr.getvalue().count("\n") == 1201


def test_caplog_sees_every_fast_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recording(monkeypatch)
    configure_logging(str(tmp_path), "INFO", max_bytes=1_000_000, backups=2)
    caplog.set_level(logging.INFO)
    log_access("GET", "/api/jobs", 200, 0.002)
    info_fast(logging.getLogger("orchestrator.audit"), "action=update 100% done")
    assert caplog.messages == ["GET /api/jobs 200 2.0ms", "action=update 100% done"]
    assert [r.name for r in caplog.records] == ["orchestrator.access", "orchestrator.audit"]


def test_caplog_sees_fast_lines_without_our_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log_access("GET", "/healthz", 200, 0.0)
    assert caplog.messages == ["GET /healthz 200 0.0ms"]


def test_the_file_is_rotated_past_max_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recording(monkeypatch)
    path = configure_logging(str(tmp_path), "INFO", max_bytes=4000, backups=2)
    assert path is not None
    logger = logging.getLogger("orchestrator.test")
    for i in range(400):
        info_fast(logger, f"line {i:04d} " + "x" * 40)
    shutdown_logging()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [LOG_FILE, f"{LOG_FILE}.1", f"{LOG_FILE}.2"]
    sizes = [(tmp_path / name).stat().st_size for name in files]
    assert all(0 < size <= 4000 for size in sizes)
    assert all(size > 3000 for size in sizes[1:])  # the backups were filled up to about max_bytes
    newest = path.read_text().splitlines()
    assert newest[-1].endswith("line 0399 " + "x" * 40)
    older = (tmp_path / f"{LOG_FILE}.1").read_text().splitlines()
    assert int(older[-1].split("line ")[1][:4]) < int(newest[0].split("line ")[1][:4])


class BlockedStream(io.StringIO):
    """A stderr whose writes wait until it is opened (a terminal or pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.opened = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.opened.wait(10)
        return super().write(text)


def test_a_blocked_writer_drops_lines_counts_them_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = BlockedStream()
    monkeypatch.setattr(sys, "stderr", stderr)
    path = configure_logging(str(tmp_path), "INFO", max_bytes=1_000_000, backups=1, max_queued_lines=100)
    assert path is not None
    logger = logging.getLogger("orchestrator.test")
    logger.warning("first")  # written at once: the writer thread now waits in stderr.write
    assert stderr.entered.wait(5)
    started = time.monotonic()
    for i in range(1000):
        info_fast(logger, f"record {i}")
    assert time.monotonic() - started < 1  # the caller never waited for the writer
    stderr.opened.set()
    shutdown_logging()
    lines = path.read_text().splitlines()
    assert lines[0].endswith(" WARNING [test] [computations-orchestrator] first")
    assert [line.split("] ")[-1] for line in lines[1:-1]] == [f"record {i}" for i in range(100)]
    dropped = " WARNING [logging] [computations-orchestrator] 900 log lines dropped (the log writer could not keep up)"
    assert lines[-1].endswith(dropped)
    assert stderr.getvalue().splitlines() == lines


def test_an_unwritable_log_dir_falls_back_to_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = recording(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert configure_logging(str(blocker / "logs"), "INFO", max_bytes=1000, backups=1) is None
    shutdown_logging()
    assert "logging to stderr only" in stderr.getvalue()


def test_importing_sets_no_global_logging_flags() -> None:
    code = (
        "import logging; import orchestrator.logconfig; "
        "assert logging.logThreads and logging.logProcesses and logging.logMultiprocessing; "
        "assert logging._srcfile is not None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_shutdown_puts_the_flags_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recording(monkeypatch)
    before = (logging.logThreads, logging._srcfile)
    configure_logging(str(tmp_path), "INFO", max_bytes=1000, backups=1)
    assert not logging.logThreads
    shutdown_logging()
    assert (logging.logThreads, logging._srcfile) == before


def test_alone_our_handler_takes_a_fast_line_without_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recording(monkeypatch)
    path = configure_logging(str(tmp_path), "INFO", max_bytes=1_000_000, backups=2)
    assert path is not None
    root = logging.getLogger()
    # As in production: no caplog, no other handler on the way (pytest's own capture handlers are taken off).
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if getattr(h, "_orchestrator", False)])
    logger = logging.getLogger("orchestrator.api")

    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("the fast path made a LogRecord")

    with monkeypatch.context() as patch:
        patch.setattr(logger, "makeRecord", no_record)
        info_fast(logger, "Client c done for job j (doneCount=1/2)")
    logger.info("Client c done for job j (doneCount=1/2)")
    shutdown_logging()
    fast, slow = path.read_text().splitlines()
    # The same line but for the milliseconds of its time.
    assert fast.split(" ", 2)[2] == slow.split(" ", 2)[2]
