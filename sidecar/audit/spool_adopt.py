"""Finding spool directories to adopt: siblings whose process is gone, and older layouts.

A sibling `{kind}/{owner}/` whose lock can be taken belongs to a process that no longer runs:
the lock is taken and kept while its segments are replayed, so two live processes never
replay the same directory. Hidden names (a directory being created, `.{owner}.tmp`) and names
that are not writer ids are never touched.

Older releases wrote `{kind}/*.spool` (one process) and `worker-N/{kind}/*.spool` (`--workers`)
with no lock at all: those are adopted under `{kind}/legacy.lock`, by one process at a time.
Stop the older release's processes before starting this one on the same spool directory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from sidecar.audit.spool_dirs import (
    DIR_MODE,
    FILE_MODE,
    LOCK_NAME,
    SEGMENT_SUFFIX,
    DirLock,
    fix_mode,
)

log = structlog.get_logger("sidecar.audit.spool")

LEGACY_LOCK = "legacy.lock"
OWNER = re.compile(r"[0-9a-f]{16}\Z")
_WORKER = re.compile(r"worker-[0-9]+\Z")


@dataclass(eq=False)
class Source:
    """A directory segments come from: this process's own, an adopted one, or a legacy one."""

    label: str  # the owner id, or `legacy` / `worker-N-legacy`: names quarantine files
    directory: Path
    lock: DirLock | None  # None for legacy directories (they share the legacy lock)
    legacy: bool
    own: bool
    pending: int = 0  # segments queued and not yet removed


@dataclass
class Finder:
    """Looks for what one spool (`spool_dir/{kind}`, owned by `own`) may adopt."""

    spool_dir: Path
    kind: str
    own: str
    noted: set[Path] = field(default_factory=set)  # logged once: adoption runs every 30 s

    @property
    def kind_dir(self) -> Path:
        """`spool_dir/{kind}`."""
        return self.spool_dir / self.kind

    def orphans(self, skip: Container[str]) -> list[Source]:
        """Sibling directories whose lock was free, now locked by us (none named in `skip`)."""
        try:
            with os.scandir(self.kind_dir) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            self.note(self.kind_dir, "cannot list the spool directory", str(exc))
            return []
        found = []
        for name in names:
            if name != self.own and name not in skip and OWNER.match(name):
                source = self._take(self.kind_dir / name)
                if source is not None:
                    found.append(source)
        return found

    def _take(self, directory: Path) -> Source | None:
        try:
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                self.note(directory, "not a spool directory; left alone", "not a directory")
                return None
            lock = DirLock.take(directory / LOCK_NAME)
        except OSError as exc:
            self.note(directory, "cannot lock a spool directory", str(exc))
            return None
        if lock is None:
            if not os.path.lexists(directory / LOCK_NAME):
                self.note(directory, "spool directory without a lock file left alone", "")
            return None  # otherwise its process is alive and holds it
        fix_modes(directory, locked=True)
        return Source(directory.name, directory, lock, legacy=False, own=False)

    def legacy(self) -> tuple[DirLock, list[Source]] | None:
        """Older releases' directories holding `*.spool` names, with the legacy lock taken;
        None when there are none or another live process has them."""
        found: list[Source] = []
        if _holds_segments(self.kind_dir):
            found.append(Source("legacy", self.kind_dir, None, legacy=True, own=False))
        try:
            with os.scandir(self.spool_dir) as entries:
                workers = sorted(entry.name for entry in entries if _WORKER.match(entry.name))
        except OSError:
            workers = []
        for worker in workers:
            directory = self.spool_dir / worker / self.kind
            if _holds_segments(directory):
                found.append(Source(f"{worker}-legacy", directory, None, legacy=True, own=False))
        if not found:
            return None
        try:
            lock = DirLock.take(self.kind_dir / LEGACY_LOCK, create=True)
        except OSError as exc:
            self.note(self.kind_dir / LEGACY_LOCK, "cannot take the legacy spool lock", str(exc))
            return None
        if lock is None:
            return None
        for source in found:
            if source.directory != self.kind_dir:
                fix_mode(source.directory.parent, DIR_MODE)
                fix_modes(source.directory, locked=False)
        return lock, found

    def remove_legacy(self, sources: list[Source]) -> None:
        """Remove the emptied `worker-N/{kind}` directories (and `worker-N` once both are)."""
        for source in sources:
            if source.directory == self.kind_dir:
                continue
            for directory in (source.directory, source.directory.parent):
                try:
                    directory.rmdir()
                except OSError:
                    break  # still holds something: the other kind, or a stray file

    def note(self, path: Path, message: str, error: str) -> None:
        """Log a warning about `path`, once per process."""
        if path not in self.noted:
            self.noted.add(path)
            log.warning(message, kind=self.kind, path=str(path), error=error)


def fix_modes(directory: Path, *, locked: bool) -> None:
    """0700 on an adopted directory, 0600 on its lock file (segments are fixed as queued)."""
    fix_mode(directory, DIR_MODE)
    if locked:
        fix_mode(directory / LOCK_NAME, FILE_MODE)


def _holds_segments(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(entry.name.endswith(SEGMENT_SUFFIX) for entry in entries)
    except OSError:
        return False
