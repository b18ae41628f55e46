"""Helpers for the spool tests: sealed records, spools on a temp dir, a hard deadline."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sidecar.audit.integrity import seal
from sidecar.audit.spool import Spool, SpoolBudget, SpooledRecord

STREAM = "test:spool"
BUDGET = 10 * 1024 * 1024


def record(owner: str, seq: int, payload: str = "") -> SpooledRecord:
    """A record whose document carries its chain members, as the writer seals it."""
    body = f'{{"n":{seq},"p":"{payload}"}}'.encode()
    document = seal(STREAM, body, writer=owner, seq=seq, prev="", keys=None).document
    return SpooledRecord(owner, seq, document)


def records(owner: str, seqs: range | list[int]) -> list[SpooledRecord]:
    """`record` for each of `seqs`."""
    return [record(owner, seq) for seq in seqs]


@dataclass
class Counted:
    """A `quarantined` hook that remembers what it was told."""

    calls: list[int] = field(default_factory=list)

    def __call__(self, count: int) -> None:
        self.calls.append(count)

    @property
    def total(self) -> int:
        """Entries and files reported so far."""
        return sum(self.calls)


def make_spool(
    spool_dir: Path,
    budget: SpoolBudget | None = None,
    *,
    owner: str | None = None,
    hook: Counted | None = None,
    kind: str = "audit",
) -> Spool:
    """A spool checking document chains, as the app will build it."""
    return Spool(
        spool_dir,
        kind,
        budget if budget is not None else SpoolBudget(BUDGET),
        stream=STREAM,
        owner=owner if owner is not None else os.urandom(8).hex(),
        quarantined=hook if hook is not None else Counted(),
    )


def orphan(
    spool_dir: Path,
    owner: str,
    batches: list[list[SpooledRecord]],
    raw: dict[str, bytes] | None = None,
) -> Path:
    """The directory a process that is gone left behind: each batch appended (and `raw` files
    written as they are), then closed. Returns the directory."""
    with make_spool(spool_dir, owner=owner) as gone:
        for batch in batches:
            gone.append(batch)
        for name, data in (raw or {}).items():
            (gone.directory / name).write_bytes(data)
        return gone.directory


def replay_all(spool: Spool, *, limit: int = 1000) -> list[SpooledRecord]:
    """Read and remove every queued segment, oldest first, as the writer does."""
    out: list[SpooledRecord] = []
    for _ in range(limit):
        segment = spool.oldest()
        if segment is None:
            return out
        out += spool.read(segment)
        spool.remove(segment)
    raise AssertionError("the spool never emptied")


def quarantined_lines(spool_dir: Path) -> list[bytes]:
    """Every line of every quarantine file."""
    files = sorted((spool_dir / "quarantine").glob("*.quarantine"))
    return [line for path in files if path.is_file() for line in path.read_bytes().splitlines()]


def mode(path: Path) -> int:
    """The permission bits of `path` (not following a symlink)."""
    return os.lstat(path).st_mode & 0o777


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail with TimeoutError if the block runs longer, even inside a blocking system call
    (an `open` of a FIFO): SIGALRM interrupts it and the handler raises."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"blocked for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
