"""The append-only disk spool that holds stream records while Redis cannot take them.

Each segment file holds lines `{writer_id} {seq} {document}`; documents are compact JSON, so
they contain no raw newline. Appends are fsync'd per batch. A segment is deleted only after
every line in it has been accepted by Redis, and replaying a line twice is harmless: the
writer's Lua script skips sequence numbers Redis has already seen.

A process never appends to a segment it found at start-up: a crash may have left that one
ending in a torn line, and a new line written after it would be glued onto it and lost.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("sidecar.audit.spool")

SEGMENT_BYTES = 8 * 1024 * 1024
_SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool cannot take a batch: `audit.spool_max_bytes` reached, or the disk failed."""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One document waiting for Redis, numbered per writer so a replay appends it once."""

    writer_id: str
    seq: int
    document: bytes


class SpoolBudget:
    """`audit.spool_max_bytes`, shared by the spools of both streams."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def has_room(self, extra: int = 0) -> bool:
        """Whether `extra` more bytes stay under the budget."""
        return self.used + extra < self.max_bytes


class Spool:
    """Records Redis has not acknowledged, fsync'd to segment files in `directory`."""

    def __init__(self, directory: Path, budget: SpoolBudget) -> None:
        self.directory = directory
        self.budget = budget
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._segments = sorted(directory.glob("*" + _SUFFIX))
        self._bytes = sum(path.stat().st_size for path in self._segments)
        budget.used += self._bytes
        self._next = _next_number(self._segments)
        self._current: Path | None = None  # the segment this process appends to

    @property
    def size(self) -> int:
        """Bytes held on disk by this spool's segments."""
        return self._bytes

    @property
    def empty(self) -> bool:
        """Whether no segment is left to replay."""
        return not self._segments

    def has_room(self, extra: int = 0) -> bool:
        """Whether `extra` more bytes fit in the shared budget."""
        return self.budget.has_room(extra)

    def append(self, records: list[SpooledRecord]) -> None:
        """Write and fsync a batch; raise `SpoolFull` (writing nothing) if it would not fit."""
        data = b"".join(
            f"{record.writer_id} {record.seq} ".encode() + record.document + b"\n"
            for record in records
        )
        if not self.has_room(len(data)):
            raise SpoolFull(f"spool at {self.budget.used} of {self.budget.max_bytes} bytes")
        try:
            self._write(data)
        except OSError as exc:
            raise SpoolFull(f"cannot write the spool in {self.directory}: {exc}") from exc
        self._bytes += len(data)
        self.budget.used += len(data)

    def _write(self, data: bytes) -> None:
        path = self._writable_segment()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            # Part of the batch may have landed, ending in a torn line: count those bytes, and
            # start the next batch in a new segment so it cannot be glued onto that line.
            with contextlib.suppress(OSError):
                landed = os.fstat(fd).st_size - start
                self._bytes += landed
                self.budget.used += landed
            self._current = None
            raise
        finally:
            os.close(fd)

    def _writable_segment(self) -> Path:
        current = self._current
        if current is not None and current.stat().st_size < SEGMENT_BYTES:
            return current
        path = self.directory / f"{self._next:012d}{_SUFFIX}"
        self._next += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        _fsync_directory(self.directory)
        self._segments.append(path)
        self._current = path
        return path

    def adopt(self) -> int:
        """Take over the segments of spools whose process is gone (none yet): how many."""
        return 0

    def oldest(self) -> Path | None:
        """The first segment to replay, or None."""
        return self._segments[0] if self._segments else None

    def read(self, segment: Path) -> Iterator[SpooledRecord]:
        """The records of a segment, in order. A torn last line (crash mid-write) is skipped:
        its batch was never fsync'd, so nothing was acknowledged for it. A line that does not
        parse (the file was damaged) is logged and skipped rather than stopping the replay.
        A segment being read for replay takes no more lines: they would be deleted with it."""
        if segment == self._current:
            self._current = None
        with open(segment, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    break
                try:
                    writer_id, seq, document = line.rstrip(b"\n").split(b" ", 2)
                    record = SpooledRecord(writer_id.decode("ascii"), int(seq), document)
                except ValueError:
                    log.error("unreadable spool line skipped", segment=str(segment), line=number)
                    continue
                yield record

    def remove(self, segment: Path) -> None:
        """Delete a replayed segment (fsync'd) and give its bytes back to the budget."""
        size = segment.stat().st_size
        segment.unlink()
        _fsync_directory(self.directory)
        self._segments.remove(segment)
        if segment == self._current:
            self._current = None
        self._bytes -= size
        self.budget.used -= size


def _next_number(segments: list[Path]) -> int:
    numbers = [int(path.stem) for path in segments if path.stem.isdigit()]
    return max(numbers, default=0) + 1


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
