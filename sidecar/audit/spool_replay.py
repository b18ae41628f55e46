"""What waits for replay: this process's segments and the ones it adopted, the bytes they hold
against the budget, and reading them back with every entry checked (SPEC §17).

Adopted directories (`spool_adopt`) stay locked while their segments are replayed after this
process's own older ones, and are removed once they all are.

Nothing here raises OSError to the writer: a file that vanished, is not a regular file, or
cannot be read is logged (and quarantined when it still exists), then forgotten.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from sidecar.audit.spool_adopt import Finder, Source
from sidecar.audit.spool_dirs import (
    FILE_MODE,
    DirLock,
    NotRegular,
    Quarantine,
    fix_mode,
    fsync_dir,
    list_segments,
    read_regular,
)
from sidecar.audit.spool_format import CorruptEntry, SpooledRecord, decode, decode_legacy

log = structlog.get_logger("sidecar.audit.spool")


class SpoolBudget:
    """`audit.spool_max_bytes`, shared by the spools of both streams."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def has_room(self, extra: int = 0) -> bool:
        """Whether `extra` more bytes stay under the budget."""
        return self.used + extra < self.max_bytes


@dataclass(eq=False)
class _Queued:
    path: Path
    source: Source
    size: int
    keep: bool = False  # damaged entries could not be quarantined: leave the file on disk


@dataclass(eq=False)
class SpoolReader:
    """The replay queue of one spool (own segments and adopted ones, oldest first)."""

    spool_dir: Path
    kind: str
    stream: str
    own: Source
    budget: SpoolBudget
    quarantine: Quarantine
    quarantined: Callable[[int], None]
    verify_chain: bool

    def __post_init__(self) -> None:
        self.queue: list[_Queued] = []
        self.bytes = 0
        self._by_path: dict[Path, _Queued] = {}
        self._adopted: dict[str, Source] = {}
        self._legacy: list[Source] = []
        self._legacy_lock: DirLock | None = None
        self._finder = Finder(self.spool_dir, self.kind, self.own.label)
        self._noted = self._finder.noted  # already logged or counted: do not repeat
        self._parsed: tuple[Path, list[SpooledRecord]] | None = None

    # -- this process's segments ----------------------------------------------------------

    def add_own(self, path: Path) -> None:
        """Queue a segment this process just created."""
        self._enqueue(self.own, path, 0)

    def grew(self, path: Path, count: int) -> None:
        """`count` bytes were appended to `path`."""
        queued = self._by_path.get(path)
        if queued is not None:
            queued.size += count
        self.bytes += count
        self.budget.used += count

    def size_of(self, path: Path) -> int:
        """The bytes of a queued segment (a forgotten one counts as full: start another)."""
        queued = self._by_path.get(path)
        return queued.size if queued is not None else 1 << 62

    def own_pending(self) -> bool:
        """Whether segments of this process's own directory still wait."""
        return self.own.pending > 0

    # -- adoption -------------------------------------------------------------------------

    def adopt(self) -> int:
        """Queue the segments of unlocked sibling directories and of legacy layouts."""
        count = 0
        for source in self._finder.orphans(skip=self._adopted):
            self._adopted[source.label] = source
            taken = self._take_segments(source)
            log.info("spool directory adopted", kind=self.kind, owner=source.label, segments=taken)
            count += taken
            if source.pending == 0:
                self._retire(source)
        if self._legacy_lock is None and (legacy := self._finder.legacy()) is not None:
            self._legacy_lock, self._legacy = legacy
            taken = sum(self._take_segments(source) for source in self._legacy)
            log.info("legacy spool adopted", kind=self.kind, segments=taken)
            count += taken
            self._retire(self._legacy[0])
        return count

    def _take_segments(self, source: Source) -> int:
        try:
            listing = list_segments(source.directory)
        except OSError as exc:
            self._finder.note(source.directory, "cannot list an adopted spool directory", str(exc))
            return 0
        for path, what in listing.strays:
            self._quarantine_file(source, path, f"not a regular file ({what})")
        count = 0
        for path in listing.segments:
            try:
                size = os.lstat(path).st_size
            except FileNotFoundError:
                continue  # replayed and removed by its owner as it died
            except OSError as exc:
                self._finder.note(path, "cannot stat a spool segment; skipped", str(exc))
                continue
            fix_mode(path, FILE_MODE)
            self._enqueue(source, path, size)
            count += 1
        return count

    # -- replay ---------------------------------------------------------------------------

    def read(self, path: Path) -> list[SpooledRecord]:
        """The trusted records of a queued segment (see `Spool.read`)."""
        queued = self._by_path.get(path)
        if queued is None:
            return []
        if self._parsed is not None and self._parsed[0] == path:
            return self._parsed[1]
        try:
            data = read_regular(path)
        except FileNotFoundError:
            log.error(
                "spool segment vanished before its replay; its records cannot be recovered",
                kind=self.kind,
                segment=str(path),
            )
            self._forget(queued)
            return []
        except OSError as exc:
            reason = f"not a regular file ({exc})" if isinstance(exc, NotRegular) else str(exc)
            self._quarantine_file(queued.source, path, reason)
            self._forget(queued)
            return []
        records = self._parse(queued, data)
        self._parsed = (path, records)
        return records

    def _parse(self, queued: _Queued, data: bytes) -> list[SpooledRecord]:
        records: list[SpooledRecord] = []
        bad: list[tuple[int, str, bytes]] = []
        start = number = 0
        while start < len(data):
            number += 1
            end = data.find(b"\n", start)
            stop = len(data) if end < 0 else end + 1
            line, start = data[start:stop], stop
            try:
                if queued.source.legacy:
                    records.append(decode_legacy(line))
                else:
                    records.append(decode(line, stream=self.stream, verify_chain=self.verify_chain))
            except CorruptEntry as exc:
                bad.append((number, str(exc), line))
        if queued.source.legacy:
            log.warning(
                "legacy spool segment replayed unchecked (no checksum, no chain); "
                "`sidecar audit verify` checks its records in the stream",
                kind=self.kind,
                segment=str(queued.path),
                records=len(records),
            )
        if bad:
            self._quarantine_lines(queued, bad)
        return records

    def _quarantine_lines(self, queued: _Queued, bad: list[tuple[int, str, bytes]]) -> None:
        try:
            where = str(
                self.quarantine.keep_lines(queued.source.label, queued.path, [b[2] for b in bad])
            )
        except OSError as exc:
            queued.keep = True  # the segment stays on disk: the next process tries again
            where = f"not quarantined ({exc}); the segment is kept on disk"
        for number, reason, _line in bad:
            log.error(
                "spool entry quarantined",
                kind=self.kind,
                segment=str(queued.path),
                line=number,
                reason=reason,
                quarantine=where,
            )
        self.quarantined(len(bad))

    def _quarantine_file(self, source: Source, path: Path, reason: str) -> None:
        if path in self._noted:
            return
        self._noted.add(path)
        try:
            where = str(self.quarantine.move(source.label, path))
        except OSError as exc:
            where = f"not moved ({exc}); skipped"
        log.error(
            "spool file quarantined",
            kind=self.kind,
            segment=str(path),
            reason=reason,
            quarantine=where,
        )
        self.quarantined(1)

    def remove(self, path: Path) -> None:
        """Delete a replayed segment and forget it (see `Spool.remove`)."""
        queued = self._by_path.get(path)
        if queued is None:
            return
        if not queued.keep:
            try:
                path.unlink(missing_ok=True)
                fsync_dir(path.parent)
            except OSError as exc:
                # Its records are in Redis: a later replay of the file writes nothing twice.
                log.error(
                    "cannot delete a replayed spool segment", segment=str(path), error=str(exc)
                )
        self._forget(queued)

    # -- bookkeeping ----------------------------------------------------------------------

    def _enqueue(self, source: Source, path: Path, size: int) -> None:
        queued = _Queued(path, source, size)
        self.queue.append(queued)
        self._by_path[path] = queued
        source.pending += 1
        self.bytes += size
        self.budget.used += size

    def _forget(self, queued: _Queued) -> None:
        self.queue.remove(queued)
        del self._by_path[queued.path]
        if self._parsed is not None and self._parsed[0] == queued.path:
            self._parsed = None
        self.bytes -= queued.size
        self.budget.used -= queued.size
        queued.source.pending -= 1
        if queued.source.pending == 0:
            self._retire(queued.source)

    def _retire(self, source: Source) -> None:
        """A source with nothing left to replay: remove an adopted directory, release the
        legacy lock once every legacy directory is done."""
        if source.own:
            return
        if source.legacy:
            if any(legacy.pending for legacy in self._legacy):
                return
            self._finder.remove_legacy(self._legacy)
            self._legacy = []
            if self._legacy_lock is not None:
                self._legacy_lock.release()
                self._legacy_lock = None
            return
        assert source.lock is not None
        if source.lock.remove_directory(source.directory):
            del self._adopted[source.label]
            log.info("adopted spool directory replayed and removed", path=str(source.directory))
        else:  # still locked by us, so it is not adopted again and again
            self._finder.note(
                source.directory, "adopted spool directory kept: it holds other files", ""
            )

    def release_all(self) -> None:
        """Let go of every adopted directory (for the next process) and forget its segments."""
        for queued in [q for q in self.queue if not q.source.own]:
            self.queue.remove(queued)
            del self._by_path[queued.path]
            self.bytes -= queued.size
            self.budget.used -= queued.size
        for source in self._adopted.values():
            if source.lock is not None:
                source.lock.release()
        self._adopted.clear()
        if self._legacy_lock is not None:
            self._legacy_lock.release()
            self._legacy_lock = None
        self._legacy = []
