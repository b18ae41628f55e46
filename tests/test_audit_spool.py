"""SPEC §17, the spool on its own, on real temp dirs: the checksummed entry format, the
quarantine of everything replay must not trust, the budget, permissions, and adoption of the
directories of processes that are gone (a second `Spool` in this process stands for another
process: flock locks conflict between open files, not only between processes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from crc32c import crc32c
from structlog.testing import capture_logs

from sidecar.audit.integrity import seal
from sidecar.audit.spool import Spool, SpoolBudget, SpooledRecord, SpoolFull
from sidecar.audit.spool_format import CorruptEntry, decode, encode
from tests.spoolsupport import (
    STREAM,
    Counted,
    make_spool,
    mode,
    orphan,
    quarantined_lines,
    record,
    records,
    replay_all,
)

W1 = "0123456789abcdef"
W2 = "fedcba9876543210"


def line_of(writer: str, seq: str, document: bytes) -> bytes:
    """An entry with a valid CRC over whatever it is given (a forger can compute one)."""
    body = f"{writer} {seq} ".encode() + document
    return f"{crc32c(body):08x} ".encode() + body + b"\n"


# -- the entry format -----------------------------------------------------------------------------


def test_an_entry_is_crc_writer_seq_document_and_decodes_back() -> None:
    entry = record(W1, 7, "x y z")
    line = encode(entry)
    crc, body = line[:8], line[9:-1]
    assert line.endswith(b"\n")
    assert line[8:9] == b" "
    assert int(crc, 16) == crc32c(body)
    assert body == f"{W1} 7 ".encode() + entry.document
    assert decode(line, stream=STREAM) == entry


def test_a_document_with_a_newline_is_refused_at_append() -> None:
    with pytest.raises(ValueError, match="newline"):
        encode(SpooledRecord(W1, 1, b'{"a":"\n"}'))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (encode(record(W1, 1))[:-1], "torn"),
        (encode(record(W1, 1)).replace(b'"n":1', b'"n":2'), "checksum mismatch"),
        (encode(record(W1, 12)).replace(f"{W1} 12".encode(), f"{W1} 19".encode()), "checksum"),
        (b"garbage\n", "no checksum"),
        (line_of("w1", "1", record(W1, 1).document), "writer id"),
        (line_of(W1, "0", record(W1, 1).document), "sequence number"),
        (line_of(W1, "-1", record(W1, 1).document), "sequence number"),
        (line_of(W1, "2", record(W1, 1).document), "differ from the document"),
        (line_of(W2, "1", record(W1, 1).document), "differ from the document"),
        (line_of(W1, "1", b'{"n":1}'), "chain unreadable"),
    ],
)
def test_every_check_on_an_entry_has_its_own_reason(line: bytes, reason: str) -> None:
    with pytest.raises(CorruptEntry, match=reason):
        decode(line, stream=STREAM)


# -- append, read, remove -------------------------------------------------------------------------


def test_round_trip_sizes_and_modes(tmp_path: Path) -> None:
    budget = SpoolBudget(1 << 20)
    spool = make_spool(tmp_path / "spool", budget, owner=W1)
    assert spool.empty
    assert spool.oldest() is None
    assert spool.directory == tmp_path / "spool" / "audit" / W1
    first, second = records(W1, [1, 2]), records(W1, [3])
    spool.append(first)
    spool.append(second)
    segment = spool.oldest()
    assert segment is not None
    assert segment.parent == spool.directory
    assert spool.read(segment) == first + second
    assert spool.size == segment.stat().st_size == budget.used > 0
    assert mode(segment) == mode(spool.directory / "lock") == 0o600  # records: personal data
    for directory in ("spool", "spool/audit", "spool/quarantine", f"spool/audit/{W1}"):
        assert mode(tmp_path / directory) == 0o700, directory

    spool.remove(segment)
    assert spool.empty
    assert spool.size == budget.used == 0
    assert not segment.exists()
    spool.close()
    assert not spool.directory.exists()  # nothing left in it: nothing for anyone to adopt


def test_spool_full_writes_nothing(tmp_path: Path) -> None:
    budget = SpoolBudget(200)
    spool = make_spool(tmp_path / "spool", budget)
    small = record(spool.owner, 1)
    spool.append([small])
    used = len(encode(small))
    with pytest.raises(SpoolFull):
        spool.append([record(spool.owner, 2, "y" * (200 - used))])
    assert budget.used == spool.size == used
    assert replay_all(spool) == [small]


def test_the_budget_is_shared_by_both_spools_and_counts_adopted_segments(tmp_path: Path) -> None:
    budget = SpoolBudget(400)
    audit = make_spool(tmp_path / "spool", budget, kind="audit")
    events = make_spool(tmp_path / "spool", budget, kind="events")
    audit.append([record(audit.owner, 1, "a" * 200)])
    assert budget.used == audit.size > 200
    assert not events.has_room(400 - audit.size)
    with pytest.raises(SpoolFull):
        events.append([record(events.owner, 1, "e" * 200)])
    assert events.empty
    segment = audit.oldest()
    assert segment is not None
    audit.read(segment)
    audit.remove(segment)  # freed by one, usable by the other
    events.append([record(events.owner, 1, "e" * 200)])
    assert budget.used == events.size
    events.close()
    audit.close()

    # The next process counts what it adopts against its one budget.
    restarted = SpoolBudget(400)
    again_audit = make_spool(tmp_path / "spool", restarted, kind="audit")
    again_events = make_spool(tmp_path / "spool", restarted, kind="events")
    assert restarted.used == 0
    assert again_audit.adopt() == 0
    assert again_events.adopt() == 1
    assert restarted.used == again_events.size == budget.used
    replay_all(again_events)
    assert restarted.used == 0


def test_a_segment_read_for_replay_takes_no_more_lines(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    spool.append(records(spool.owner, [1]))
    segment = spool.oldest()
    assert segment is not None
    replaying = spool.read(segment)
    spool.append(records(spool.owner, [2]))  # e.g. `flush` at exit, mid-replay
    spool.remove(segment)  # Redis took what was read
    assert replaying == records(spool.owner, [1])
    assert replay_all(spool) == records(spool.owner, [2])


# -- adoption ----------------------------------------------------------------------------------


def test_a_dead_process_directory_is_adopted_after_own_segments_and_then_removed(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    spool = make_spool(spool_dir)
    spool.append(records(spool.owner, [1, 2]))
    gone = orphan(spool_dir, W1, [records(W1, [1, 2]), records(W1, [3])])
    assert spool.adopt() == 1
    assert spool.adopt() == 0  # already ours: cheap, and not queued twice
    spool.append(records(spool.owner, [3]))  # into our own segment, never the adopted one
    assert [(r.writer_id, r.seq) for r in replay_all(spool)] == [
        (spool.owner, 1), (spool.owner, 2), (spool.owner, 3), (W1, 1), (W1, 2), (W1, 3),
    ]  # fmt: skip
    assert not gone.exists()
    assert spool.empty
    assert spool.size == spool.budget.used == 0


def test_a_live_spool_is_not_adopted_and_is_once_it_closes(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    live = make_spool(spool_dir, owner=W1)
    live.append(records(W1, [1]))
    other = make_spool(spool_dir)
    assert other.adopt() == 0
    assert other.empty
    live.close()
    assert other.adopt() == 1
    assert replay_all(other) == records(W1, [1])


def test_two_spools_never_adopt_the_same_directory(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    orphan(spool_dir, W1, [records(W1, [1])])
    first, second = make_spool(spool_dir), make_spool(spool_dir)
    assert (first.adopt(), second.adopt()) == (1, 0)
    first.close()  # gone before replaying: the other one takes over
    assert second.adopt() == 1
    assert replay_all(second) == records(W1, [1])


def test_a_torn_line_left_by_a_crash_is_quarantined_and_never_glued_onto(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    gone = orphan(spool_dir, W1, [records(W1, [1, 2])])
    segment = next(gone.glob("*.spool"))
    torn = encode(record(W1, 3))[:-9]
    with open(segment, "ab") as handle:  # the process died in the middle of a write
        handle.write(torn)
    hook = Counted()
    spool = make_spool(spool_dir, hook=hook)
    spool.adopt()
    spool.append(records(spool.owner, [1]))
    with capture_logs() as logs:
        assert replay_all(spool) == records(W1, [1, 2]) + records(spool.owner, [1])
    assert hook.total == 1
    assert quarantined_lines(spool_dir) == [torn]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["segment"], e["line"]) for e in errors] == [(str(segment), 3)]
    assert "torn" in errors[0]["reason"]


def test_close_keeps_a_directory_with_segments_for_the_next_process(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = make_spool(spool_dir, owner=W1)
    spool.append(records(W1, [1]))
    spool.close()
    assert list(spool.directory.glob("*.spool"))
    with pytest.raises(SpoolFull):
        spool.append(records(W1, [2]))  # closed: nothing more goes to a released directory
    assert (spool.directory / "lock").exists()  # so the next process can adopt it
    successor = make_spool(spool_dir)
    assert successor.adopt() == 1
    assert replay_all(successor) == records(W1, [1])


def test_an_owner_must_be_a_writer_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 hex"):
        Spool(tmp_path, "audit", SpoolBudget(100), stream=STREAM, owner="../x")
    with pytest.raises(ValueError, match="spool kind"):
        Spool(tmp_path, "archive", SpoolBudget(100), stream=STREAM)


# -- the quarantine -------------------------------------------------------------------------------


def damaged_spool(tmp_path: Path, damage: bytes, at: int = 2) -> tuple[Spool, Counted, Path]:
    """An adopted directory whose segment holds W1's records 1..4 with line `at` replaced."""
    spool_dir = tmp_path / "spool"
    lines = [encode(entry) for entry in records(W1, [1, 2, 3, 4])]
    lines[at - 1] = damage
    gone = orphan(spool_dir, W1, [], {"000000000001.spool": b"".join(lines)})
    segment = gone / "000000000001.spool"
    hook = Counted()
    spool = make_spool(spool_dir, hook=hook)
    assert spool.adopt() == 1
    return spool, hook, segment


def test_a_crc_mismatch_is_quarantined_reported_and_the_rest_replayed_in_order(
    tmp_path: Path,
) -> None:
    secret = "4111111111111111"
    bad = encode(record(W1, 2, secret)).replace(b'"n":2', b'"n":9')
    spool, hook, segment = damaged_spool(tmp_path, bad)
    with capture_logs() as logs:
        assert spool.read(segment) == records(W1, [1, 3, 4])
        assert spool.read(segment) == records(W1, [1, 3, 4])  # a retry reports nothing twice
    assert hook.calls == [1]
    assert quarantined_lines(spool.spool_dir) == [bad[:-1]]
    quarantine = spool.spool_dir / "quarantine" / f"audit-{W1}-000000000001.spool.quarantine"
    assert mode(quarantine) == 0o600
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["segment"] == str(segment)
    assert error["line"] == 2
    assert error["reason"] == "checksum mismatch"
    assert error["quarantine"] == str(quarantine)
    assert secret not in repr(logs)  # the log says where and why, never what


def test_a_changed_seq_digit_no_longer_hides_the_later_records(tmp_path: Path) -> None:
    """The finding: seq 2 damaged into 9000 used to be replayed, raising the writer's mark in
    Redis to 9000 so that 3 and 4 were skipped as "already written"."""
    good = encode(record(W1, 2))
    bad = good.replace(f" {W1} 2 ".encode(), f" {W1} 9000 ".encode())
    assert bad != good
    spool, hook, segment = damaged_spool(tmp_path, bad)
    assert [entry.seq for entry in spool.read(segment)] == [1, 3, 4]
    assert hook.total == 1


def test_a_forged_entry_with_a_valid_crc_is_quarantined(tmp_path: Path) -> None:
    forged_doc = seal(STREAM, b'{"n":2}', writer=W2, seq=5, prev="", keys=None).document
    spool, hook, segment = damaged_spool(tmp_path, line_of(W1, "2", forged_doc))
    assert [entry.seq for entry in spool.read(segment)] == [1, 3, 4]
    assert hook.total == 1


def test_several_damaged_entries_are_all_kept_together(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    entries = [encode(entry) for entry in records(W1, [1, 2, 3])]
    raw = {
        "000000000001.spool": b"junk\n" + entries[0] + b"\n" + entries[1][:-1],
        "000000000002.spool": entries[2],
    }
    orphan(spool_dir, W1, [], raw)
    hook = Counted()
    spool = make_spool(spool_dir, hook=hook)
    spool.adopt()
    assert replay_all(spool) == records(W1, [1, 3])
    assert hook.calls == [3]
    assert quarantined_lines(spool_dir) == [b"junk", b"", entries[1][:-1]]


# -- permissions ----------------------------------------------------------------------------------


def test_pre_existing_wide_directories_are_fixed_with_a_warning(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    for directory in (spool_dir, spool_dir / "audit", spool_dir / "quarantine"):
        directory.mkdir()
        directory.chmod(0o777)
    with capture_logs() as logs:
        spool = make_spool(spool_dir)
    for directory in (spool_dir, spool_dir / "audit", spool_dir / "quarantine"):
        assert mode(directory) == 0o700
    fixed = [e for e in logs if e["event"] == "spool permissions fixed"]
    wanted = {spool_dir, spool_dir / "audit", spool_dir / "quarantine"}
    assert {e["path"] for e in fixed} == {str(path) for path in wanted}
    assert all(e["log_level"] == "warning" and e["was"] == "0o777" for e in fixed)
    spool.close()


def test_an_adopted_directory_and_its_files_are_fixed(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    gone = orphan(spool_dir, W1, [records(W1, [1])])
    gone.chmod(0o777)
    for path in gone.iterdir():
        path.chmod(0o666)
    spool = make_spool(spool_dir)
    spool.adopt()
    assert mode(gone) == 0o700
    assert {mode(path) for path in gone.iterdir()} == {0o600}
    assert replay_all(spool) == records(W1, [1])


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o277])
def test_the_umask_does_not_matter(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        spool = make_spool(tmp_path / "spool", hook=Counted())
        spool.append(records(spool.owner, [1]))
        spool.append(records(spool.owner, [2]))
        segment = spool.oldest()
    finally:
        os.umask(previous)
    assert segment is not None
    assert mode(segment) == 0o600
    assert stat.S_IMODE(os.stat(spool.directory).st_mode) == 0o700
    assert replay_all(spool) == records(spool.owner, [1, 2])
