"""SPEC §17, the spool's fault findings, one test each: things that are not segments but are
named like them, segments that vanish, a quarantine that cannot be written, a lock held by
another live process, the layouts of older releases, and the writer living through all of it.
Blocking calls run under a hard deadline (SIGALRM), so a hang fails instead of stalling."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from sidecar.audit.integrity import seal
from sidecar.audit.spool import SpoolBudget, SpooledRecord, SpoolFull
from sidecar.audit.spool_format import encode
from sidecar.audit.writer import DurableStreamWriter
from tests.helpers import wait_until
from tests.spoolsupport import (
    STREAM,
    Counted,
    deadline,
    make_spool,
    orphan,
    quarantined_lines,
    record,
    records,
    replay_all,
)

W1 = "0123456789abcdef"
LEGACY_1 = "1111111111111111"
LEGACY_2 = "2222222222222222"


def make_fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)


def make_directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_bytes(b"x")


def make_symlink(path: Path) -> None:
    # To a valid segment: following it would replay (and then delete) a file not ours.
    target = path.parents[3] / "elsewhere.spool"  # tmp_path, outside the spool
    target.write_bytes(encode(record(W1, 9)))
    path.symlink_to(target)


def make_socket(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFSOCK)


STRAYS: dict[str, Callable[[Path], None]] = {
    "FIFO": make_fifo,
    "directory": make_directory,
    "symbolic link": make_symlink,
    "socket": make_socket,
}


# -- things named *.spool that are not segments --------------------------------------------------


@pytest.mark.parametrize("kind", list(STRAYS))
def test_a_stray_in_an_adopted_directory_is_quarantined_without_hanging(
    tmp_path: Path, kind: str
) -> None:
    spool_dir = tmp_path / "spool"
    gone = orphan(spool_dir, W1, [records(W1, [1, 2])])
    stray = gone / "000000000000.spool"  # sorts first: replay meets it before the real one
    STRAYS[kind](stray)
    hook = Counted()
    with deadline(10), capture_logs() as logs:
        spool = make_spool(spool_dir, hook=hook)
        assert spool.adopt() == 1
        assert replay_all(spool) == records(W1, [1, 2])
    assert hook.total == 1
    moved = spool_dir / "quarantine" / f"audit-{W1}-000000000000.spool.quarantine"
    assert os.path.lexists(moved)
    assert not os.path.lexists(stray)
    assert not gone.exists()  # replayed and removed once the stray was out of the way
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["event"] == "spool file quarantined"
    assert kind in error["reason"]
    if kind == "symbolic link":
        assert (tmp_path / "elsewhere.spool").exists()  # the target was never touched


@pytest.mark.parametrize("kind", list(STRAYS))
def test_a_stray_in_the_legacy_directory_does_not_stop_start_up(tmp_path: Path, kind: str) -> None:
    """The finding: a FIFO named *.spool hung start-up (the open blocked forever)."""
    spool_dir = tmp_path / "spool"
    (spool_dir / "audit").mkdir(parents=True)
    STRAYS[kind](spool_dir / "audit" / "000000000001.spool")
    hook = Counted()
    with deadline(10):
        spool = make_spool(spool_dir, hook=hook)
        assert spool.adopt() == 0
        assert spool.adopt() == 0  # counted once, not at every adoption pass
    assert hook.total == 1
    assert spool.empty
    assert not list((spool_dir / "audit").glob("*.spool"))


def test_a_fifo_swapped_in_after_adoption_is_quarantined_at_read(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    gone = orphan(spool_dir, W1, [records(W1, [1])])
    hook = Counted()
    spool = make_spool(spool_dir, hook=hook)
    assert spool.adopt() == 1
    segment = spool.oldest()
    assert segment is not None
    segment.unlink()
    os.mkfifo(segment, 0o600)
    with deadline(10):
        assert spool.read(segment) == []
    spool.remove(segment)
    assert hook.total == 1
    assert spool.empty
    assert spool.budget.used == 0
    assert not gone.exists()


# -- segments that vanish --------------------------------------------------------------------------


def test_a_segment_that_vanished_is_logged_and_forgotten(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    gone = orphan(spool_dir, W1, [records(W1, [1])])
    spool = make_spool(spool_dir)
    spool.append(records(spool.owner, [1]))
    assert spool.adopt() == 1
    own = spool.oldest()
    assert own is not None
    assert spool.read(own) == records(spool.owner, [1])
    spool.remove(own)
    segment = spool.oldest()
    assert segment is not None
    segment.unlink()  # removed between listing and reading (by hand, by a cleaner)
    with capture_logs() as logs:
        assert spool.read(segment) == []
        spool.remove(segment)  # what the writer does next: harmless
    assert spool.empty
    assert spool.budget.used == 0
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert "vanished" in error["event"]
    assert error["segment"] == str(segment)
    assert not gone.exists()


def test_an_own_segment_that_vanished_does_not_stop_later_appends(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    spool.append(records(spool.owner, [1]))
    segment = spool.oldest()
    assert segment is not None
    segment.unlink()
    assert spool.read(segment) == []
    spool.append(records(spool.owner, [2]))
    assert replay_all(spool) == records(spool.owner, [2])


def test_appends_resume_in_a_new_segment_once_a_vanished_directory_is_back(
    tmp_path: Path,
) -> None:
    spool = make_spool(tmp_path / "spool")
    spool.append(records(spool.owner, [1]))
    shutil.rmtree(spool.directory)  # the disk went away under the process
    with pytest.raises(SpoolFull):
        spool.append(records(spool.owner, [2]))
    spool.directory.mkdir(mode=0o700)  # and came back, empty
    spool.append(records(spool.owner, [2]))
    assert replay_all(spool) == records(spool.owner, [2])
    assert spool.budget.used == 0


# -- a quarantine that cannot be written -----------------------------------------------------------


def test_a_damaged_segment_is_kept_when_the_quarantine_cannot_take_it(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    bad = encode(record(W1, 2)).replace(b'"n":2', b'"n":7')
    orphan(spool_dir, W1, [], {"000000000001.spool": encode(record(W1, 1)) + bad})
    hook = Counted()
    spool = make_spool(spool_dir, hook=hook)
    shutil.rmtree(spool_dir / "quarantine")
    (spool_dir / "quarantine").write_bytes(b"")  # not a directory: every write there fails
    assert spool.adopt() == 1
    with capture_logs() as logs:
        assert replay_all(spool) == records(W1, [1])
    assert hook.total == 1
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert "kept on disk" in error["quarantine"]
    segment = spool_dir / "audit" / W1 / "000000000001.spool"
    assert segment.exists()  # not dropped: the next process tries again
    spool.close()

    (spool_dir / "quarantine").unlink()
    successor = make_spool(spool_dir, hook=hook)
    assert successor.adopt() == 1
    assert replay_all(successor) == records(W1, [1])  # Redis skips what it already has
    assert quarantined_lines(spool_dir) == [bad[:-1]]
    assert not segment.exists()


# -- locks -----------------------------------------------------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin
"""


def test_a_directory_locked_by_another_live_process_is_not_adopted(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    gone = orphan(spool_dir, W1, [records(W1, [1])])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(gone / "lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        with deadline(20):
            assert holder.stdout.readline() == b"locked\n"
        spool = make_spool(spool_dir)
        assert spool.adopt() == 0
        assert spool.empty
        assert gone.exists()
    finally:
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=20)
        holder.stdout.close()
    assert holder.returncode == 0
    assert spool.adopt() == 1  # its process is gone: now it is ours
    assert replay_all(spool) == records(W1, [1])


# -- older releases --------------------------------------------------------------------------------


def legacy_line(writer: str, seq: int) -> bytes:
    """A line as older releases wrote it: no CRC, a document with no chain."""
    return f'{writer} {seq} {{"n":{seq}}}\n'.encode()


def test_legacy_layouts_are_adopted_once_with_a_warning_per_segment(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    single = spool_dir / "audit"
    worker0, worker1 = spool_dir / "worker-0", spool_dir / "worker-1"
    for directory in (single, worker0 / "audit", worker0 / "events", worker1 / "audit"):
        directory.mkdir(parents=True)
    (single / "000000000001.spool").write_bytes(legacy_line(LEGACY_1, 1) + legacy_line(LEGACY_1, 2))
    (single / "000000000002.spool").write_bytes(legacy_line(LEGACY_1, 3) + b"1111 4 {")
    (worker0 / "audit" / "000000000001.spool").write_bytes(legacy_line(LEGACY_2, 1))
    (worker0 / "events" / "000000000001.spool").write_bytes(legacy_line(LEGACY_2, 1))
    (worker1 / "audit" / "000000000001.spool").write_bytes(b"")
    hook = Counted()
    first = make_spool(spool_dir, hook=hook)
    second = make_spool(spool_dir)
    assert first.adopt() == 4
    assert second.adopt() == 0  # the legacy lock is held: one process replays them
    with capture_logs() as logs:
        replayed = replay_all(first)
    assert [(r.writer_id, r.seq) for r in replayed] == [
        (LEGACY_1, 1), (LEGACY_1, 2), (LEGACY_1, 3), (LEGACY_2, 1),
    ]  # fmt: skip
    assert replayed[0] == SpooledRecord(LEGACY_1, 1, b'{"n":1}')
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 4
    assert all("legacy" in e["event"] and "unchecked" in e["event"] for e in warnings)
    assert hook.total == 1  # the torn line
    assert not list(single.glob("*.spool"))
    assert not worker1.exists()
    assert not (worker0 / "audit").exists()
    assert (worker0 / "events").exists()  # the events spool's to adopt
    assert first.adopt() == 0

    events = make_spool(spool_dir, kind="events")
    assert events.adopt() == 1
    assert replay_all(events) == [SpooledRecord(LEGACY_2, 1, b'{"n":1}')]
    assert not worker0.exists()


# -- the writer lives through it -------------------------------------------------------------------


async def test_the_writer_replays_what_is_left_when_segments_vanish_or_are_not_files(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The finding: a segment removed (or replaced by a directory) while Redis was down made
    the writer task die with an exception nobody read; every later record stayed in memory."""
    spool_dir = tmp_path / "spool"
    owners = [f"{n:016x}" for n in range(1, 5)]
    for owner in owners:
        orphan(spool_dir, owner, [records(owner, [1, 2])])
    hook = Counted()
    spool = make_spool(spool_dir, SpoolBudget(1 << 20), hook=hook)
    assert spool.adopt() == 4
    (spool_dir / "audit" / owners[1] / "000000000001.spool").unlink()
    replaced = spool_dir / "audit" / owners[2] / "000000000001.spool"
    replaced.unlink()
    replaced.mkdir()
    writer = DurableStreamWriter(redis_client, STREAM, "record", spool)
    task = asyncio.create_task(writer.run())
    try:
        writer.submit(
            seal(STREAM, b'{"n":0}', writer=spool.owner, seq=1, prev="", keys=None).document
        )

        async def done() -> bool:
            assert not task.done(), "the writer task died"
            return spool.empty and writer.depth == 0 and await redis_client.xlen(STREAM) == 5

        await wait_until(done, within=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert hook.total == 1  # the directory; the vanished segment was logged (nothing to keep)
    assert {path.name for path in (spool_dir / "audit").iterdir()} == {spool.owner}
