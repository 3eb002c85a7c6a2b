"""The log file: appended to in batches of whole lines, rotated by size (name.1, name.2, ...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO


class RotatingFile:
    """An append-only log file rotated by size like RotatingFileHandler (name.1, name.2, ...), keeping
    its size itself instead of asking the file system on every record."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.stream: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.size = self.stream.tell()

    def write_lines(self, lines: list[str]) -> None:
        """Append ``lines``, rotating first wherever the next line would take the file past max_bytes."""
        text = "\n".join(lines) + "\n"
        total = len(text.encode("utf-8", "replace"))
        if not self.max_bytes or self.size + total <= self.max_bytes:
            self.stream.write(text)  # the usual case: the whole batch fits
            self.stream.flush()
            self.size += total
            return
        start = size = 0
        for i, line in enumerate(lines):
            length = len(line.encode("utf-8", "replace")) + 1
            if self.max_bytes and self.size + size and self.size + size + length > self.max_bytes:
                self._append(lines[start:i], size)
                self.rotate()
                start, size = i, 0
            size += length
        self._append(lines[start:], size)

    def _append(self, lines: list[str], size: int) -> None:
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        self.size += size

    def rotate(self) -> None:
        self.stream.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self.stream.close()
