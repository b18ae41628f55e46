"""The append-only disk spool that holds stream records while Redis cannot take them (SPEC §17).

Each process appends to segment files in a directory of its own,
`spool_dir/{audit|events}/{owner}/`, locked for its life (`spool_dirs`), as checksummed lines
(`spool_format`). Appends are fsync'd per batch. A segment is deleted only after every line in
it has been accepted by Redis, and replaying a line twice is harmless: the writer's Lua script
skips sequence numbers Redis has already seen.

Directories left by processes that no longer run (their lock is free) are adopted and replayed
after this process's own older segments, so changing `--workers` or a crash strands nothing;
so are the layouts of older releases. An entry that fails its checks on replay is moved to the
quarantine with an error log line and counted; it is never written to the stream, and never
dropped without a word.

A process never appends to a segment it did not create: a crash may have left one ending in a
torn line, and a new line written after it would be glued onto it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from sidecar.audit.spool_adopt import OWNER, Source
from sidecar.audit.spool_dirs import (
    DIR_MODE,
    LOCK_NAME,
    SEGMENT_SUFFIX,
    DirLock,
    Quarantine,
    create_file,
    fsync_dir,
    secure_dir,
)
from sidecar.audit.spool_format import SpooledRecord, encode
from sidecar.audit.spool_replay import SpoolBudget, SpoolReader

__all__ = ["SEGMENT_BYTES", "Spool", "SpoolBudget", "SpoolFull", "SpooledRecord"]

log = structlog.get_logger("sidecar.audit.spool")

SEGMENT_BYTES = 8 * 1024 * 1024
KINDS = ("audit", "events", "admin")  # admin: the admin events (SPEC §16)


class SpoolFull(Exception):
    """The spool cannot take a batch: `audit.spool_max_bytes` reached, or the disk failed."""


def _ignore(_count: int) -> None:
    pass


@dataclass(eq=False)
class Spool:
    """Records Redis has not acknowledged, fsync'd to segments in this process's directory,
    plus the segments of directories adopted from processes that are gone.

    `spool_dir` is `audit.spool_dir`; `kind` is one of `KINDS`; `owner` the writer id
    (16 hex; a new random one when omitted); `stream` the stream the documents belong to.
    `quarantined(n)` is told of every entry or file moved to the quarantine. `verify_chain`
    checks each entry's writer/seq against its document's chain members."""

    spool_dir: Path
    kind: str
    budget: SpoolBudget
    stream: str
    owner: str = field(default_factory=lambda: os.urandom(8).hex())
    quarantined: Callable[[int], None] = _ignore
    verify_chain: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not OWNER.match(self.owner):
            raise ValueError("spool kind is one of KINDS and its owner 16 hex digits")
        kind_dir = self.spool_dir / self.kind
        for directory in (self.spool_dir, kind_dir, self.spool_dir / "quarantine"):
            secure_dir(directory)
        self.directory = kind_dir / self.owner
        self._lock = _claim(self.directory)
        own = Source(self.owner, self.directory, self._lock, legacy=False, own=True)
        self._reader = SpoolReader(
            spool_dir=self.spool_dir,
            kind=self.kind,
            stream=self.stream,
            own=own,
            budget=self.budget,
            quarantine=Quarantine(self.spool_dir / "quarantine", self.kind),
            quarantined=self.quarantined,
            verify_chain=self.verify_chain,
        )
        self._next = 1
        self._current: Path | None = None  # the segment this process appends to
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes held on disk by the segments waiting for replay (own and adopted)."""
        return self._reader.bytes

    @property
    def empty(self) -> bool:
        """Whether no segment is left to replay."""
        return not self._reader.queue

    def has_room(self, extra: int = 0) -> bool:
        """Whether `extra` more bytes fit in the shared budget."""
        return self.budget.has_room(extra)

    def adopt(self) -> int:
        """Take over the directories of processes that no longer run (and older releases'
        layouts): their segments are queued after what this spool holds. Returns how many
        segments were queued. Cheap when there is nothing to adopt; never raises OSError."""
        return self._reader.adopt()

    def append(self, records: list[SpooledRecord]) -> None:
        """Write and fsync a batch; raise `SpoolFull` (writing nothing) if it would not fit."""
        data = b"".join(encode(record) for record in records)
        if self._closed:
            raise SpoolFull("the spool is closed")
        if not self.has_room(len(data)):
            raise SpoolFull(f"spool at {self.budget.used} of {self.budget.max_bytes} bytes")
        try:
            self._write(data)
        except OSError as exc:
            raise SpoolFull(f"cannot write the spool in {self.directory}: {exc}") from exc

    def _write(self, data: bytes) -> None:
        path = self._writable_segment()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            self._current = None  # gone or replaced: once the disk is back, start a new one
            raise
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            # Cut off what landed, so no torn line is left for the replay to quarantine (the
            # batch is still in memory, refused). If even that fails, count what is there and
            # start the next batch in a new segment so it cannot be glued onto that line.
            try:
                os.ftruncate(fd, start)
            except OSError:
                with contextlib.suppress(OSError):
                    self._reader.grew(path, os.fstat(fd).st_size - start)
                self._current = None
            raise
        finally:
            os.close(fd)
        self._reader.grew(path, len(data))

    def _writable_segment(self) -> Path:
        current = self._current
        if current is not None and self._reader.size_of(current) < SEGMENT_BYTES:
            return current
        path = self.directory / f"{self._next:012d}{SEGMENT_SUFFIX}"
        self._next += 1
        os.close(create_file(path))
        fsync_dir(self.directory)
        self._reader.add_own(path)
        self._current = path
        return path

    def oldest(self) -> Path | None:
        """The first segment to replay, or None."""
        return self._reader.queue[0].path if self._reader.queue else None

    def read(self, segment: Path) -> list[SpooledRecord]:
        """The trusted records of a segment, in order. Entries that fail their checks (torn,
        checksum, shape, chain) are quarantined and reported; a segment that vanished, is not
        a regular file or cannot be read yields nothing and is forgotten (logged, and moved
        to the quarantine when it still exists). Reading again before `remove` (a retry after
        a Redis failure) returns the same records without reporting anything twice. A
        segment being read for replay takes no more lines: they would be deleted with it."""
        if segment == self._current:
            self._current = None
        return self._reader.read(segment)

    def remove(self, segment: Path) -> None:
        """Delete a replayed segment (fsync'd) and give its bytes back to the budget; once an
        adopted directory is empty it is removed. A forgotten segment is ignored."""
        if segment == self._current:
            self._current = None
        self._reader.remove(segment)

    def close(self) -> None:
        """Release this spool's directories for the next process: its own (removed when it
        holds nothing) and every adopted one. What is left on disk is adopted next time."""
        if self._closed:
            return
        self._closed = True
        self._reader.release_all()
        if self._reader.own_pending():
            self._lock.release()
        elif not self._lock.remove_directory(self.directory):
            log.warning("spool directory kept: it holds other files", path=str(self.directory))
            self._lock.release()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _claim(directory: Path) -> DirLock:
    """Create `directory` with its lock taken before anyone can see it: made under a hidden
    name, locked, then renamed into place (adoption skips hidden names), so no other process
    can find it unlocked and adopt it from under us."""
    hidden = directory.with_name(f".{directory.name}.tmp")
    os.mkdir(hidden, DIR_MODE)
    os.chmod(hidden, DIR_MODE)
    lock = DirLock.take(hidden / LOCK_NAME, create=True)
    if lock is None:  # nobody else knows this random name
        raise OSError(f"cannot lock the new spool directory {hidden}")
    os.rename(hidden, directory)
    fsync_dir(directory.parent)
    return lock
