"""The spool's directories on disk: permissions, the owner's lock, listing, the quarantine.

    spool_dir/
      audit/{owner}/lock, 000000000001.spool, …   one directory per writing process
      events/{owner}/…
      quarantine/                                  what replay would not trust, kept for a human

`owner` is the writer id of the process. It holds `flock(LOCK_EX)` on its directory's `lock`
for its whole life, so a directory whose lock can be taken belongs to a process that is gone,
and exactly one live process can take it over (adopt it). The kernel drops the lock when the
process dies, however it dies.

Everything is created through `os.open`/`os.mkdir` with explicit modes and then chmod'ed, so
the umask cannot widen or narrow what the records (personal data) are stored with.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("sidecar.audit.spool")

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = "lock"
SEGMENT_SUFFIX = ".spool"
_MAX_NAME_TRIES = 1000


def secure_dir(path: Path) -> None:
    """Make `path` (and missing parents) a directory with mode 0700; fix a wider or narrower
    existing mode with a warning. A mode that cannot be fixed is logged, not fatal: the
    directory still works, and the operator is told."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(path, DIR_MODE)
    fix_mode(path, DIR_MODE)


def fix_mode(path: Path, mode: int) -> None:
    """chmod `path` to `mode` if it is not already; say so when it was someone else's choice."""
    try:
        was = stat.S_IMODE(os.stat(path).st_mode)
        if was == mode:
            return
        os.chmod(path, mode)
    except OSError as exc:
        log.error("cannot fix spool permissions", path=str(path), error=str(exc))
        return
    log.warning("spool permissions fixed", path=str(path), was=oct(was), now=oct(mode))


def fsync_dir(directory: Path) -> None:
    """Make a create, rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_file(path: Path, flags: int = os.O_WRONLY) -> int:
    """A new file (never an existing one, never through a symlink), mode 0600 whatever the
    umask; returns its descriptor."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


@dataclass
class DirLock:
    """An exclusive `flock` on a directory's lock file, held until released."""

    fd: int

    @classmethod
    def take(cls, path: Path, *, create: bool = False) -> DirLock | None:
        """The lock on `path`, or None when a live process holds it or there is no lock file
        (`create` makes one). A lock file unlinked between our open and our flock (its owner
        was removing the directory) does not count as taken."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, FILE_MODE)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
                raise FileNotFoundError(path)
            if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        """Let another process take the directory (closing the descriptor drops the flock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove_directory(self, directory: Path) -> bool:
        """Delete `directory` (holding only its lock file) while still holding the lock, then
        release; False, with the lock still held, if other files are left in it."""
        try:
            # Check first: a directory whose lock file is gone could never be adopted again.
            if any(name != LOCK_NAME for name in os.listdir(directory)):
                return False
            (directory / LOCK_NAME).unlink(missing_ok=True)
            directory.rmdir()
            fsync_dir(directory.parent)
        except OSError:
            return False
        self.release()
        return True


@dataclass(frozen=True, slots=True)
class Listing:
    """A directory's `*.spool` names: regular files (replay order) and anything else."""

    segments: list[Path]
    strays: list[tuple[Path, str]]  # (path, what it is instead of a regular file)


def list_segments(directory: Path) -> Listing:
    """`*.spool` entries of `directory`, by lstat: nothing is opened, so a FIFO cannot block."""
    segments: list[Path] = []
    strays: list[tuple[Path, str]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.endswith(SEGMENT_SUFFIX):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            path = Path(entry.path)
            if stat.S_ISREG(mode):
                segments.append(path)
            else:
                strays.append((path, describe(mode)))
    segments.sort(key=lambda path: path.name)
    strays.sort()
    return Listing(segments, strays)


def describe(mode: int) -> str:
    """What a non-regular file is, in an operator's words."""
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class NotRegular(OSError):
    """A segment path that turned out not to be a regular file when opened."""


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file. lstat first, then open without following a symlink and
    without blocking (a FIFO put there after the lstat), then check the open file again."""
    if not stat.S_ISREG(mode := os.lstat(path).st_mode):
        raise NotRegular(describe(mode))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(mode := os.fstat(fd).st_mode):
            raise NotRegular(describe(mode))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """`spool_dir/quarantine/`: entries and files replay would not trust, kept for a human.

    Nothing there is read by the sidecar again. Files are named after where they came from:
    `{kind}-{owner}-{segment}.quarantine`."""

    directory: Path
    kind: str

    def name(self, owner: str, segment: Path) -> Path:
        """Where the entries (or the file) from `segment` of `owner` go."""
        return self.directory / f"{self.kind}-{owner}-{segment.name}.quarantine"

    def keep_lines(self, owner: str, segment: Path, lines: list[bytes]) -> Path:
        """Append `lines` as found (a torn one gets its newline) and fsync; OSError if not."""
        target = self.name(owner, segment)
        data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        try:
            fd = create_file(target, os.O_WRONLY | os.O_APPEND)
            created = True
        except FileExistsError:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
            created = False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.directory)
        return target

    def move(self, owner: str, path: Path) -> Path:
        """Move `path` (whatever it is) into the quarantine under a name not yet taken."""
        target = self.name(owner, path)
        for number in range(1, _MAX_NAME_TRIES):
            if not os.path.lexists(target):
                break
            target = target.with_name(f"{self.name(owner, path).name}.{number}")
        else:
            raise FileExistsError(target)
        os.rename(path, target)
        fsync_dir(path.parent)
        fsync_dir(self.directory)
        return target
