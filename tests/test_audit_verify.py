"""SPEC §17: `audit verify` on real streams in a real Redis, sealed as writers seal them — what it
detects (deleted, edited, forged, moved, truncated records, broken chains) and what it must
accept (replays, retention's trims and their checkpoints, chain-only streams, `--since`)."""

from __future__ import annotations

import os
import tracemalloc
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.audit.checkpoints import Checkpoint, checkpoints_key, encode_checkpoint
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.verify import WINDOW, StreamVerifier
from tests.chainsupport import (
    AUDIT_STREAM,
    EVENTS_STREAM,
    ChainWriter,
    add_raw,
    integrity_keys,
    kinds,
    verified,
)

KEYS = integrity_keys("k1")


@pytest.fixture(params=["keyed", "chain-only"])
def keys(request: pytest.FixtureRequest) -> IntegrityKeys | None:
    return KEYS if request.param == "keyed" else None


def one_byte_changed(document: bytes, old: bytes, new: bytes) -> bytes:
    assert document.count(old) == 1
    return document.replace(old, new)


# -- an untouched stream --------------------------------------------------------------------------


async def test_an_untouched_stream_passes(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    writers = [ChainWriter(AUDIT_STREAM, keys) for _ in range(3)]
    for _round in range(3):  # interleaved, as the workers of one sidecar write
        for writer in writers:
            await writer.append(redis_client, 4)
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {}
    assert report.entries == 36
    assert sorted((w.writer, w.records, w.first_seq, w.last_seq) for w in report.writers) == sorted(
        (w.writer, 12, 1, 12) for w in writers
    )


async def test_an_empty_stream_passes(redis_client: aioredis.Redis) -> None:
    report = await verified(redis_client, EVENTS_STREAM, KEYS)
    assert (report.entries, report.findings, report.writers) == (0, 0, [])


async def test_more_than_a_page_of_entries(redis_client: aioredis.Redis) -> None:
    writer = ChainWriter(EVENTS_STREAM, KEYS)
    pipe = redis_client.pipeline(transaction=False)
    for _ in range(2500):  # the walk reads pages of 1000
        pipe.xadd(EVENTS_STREAM, {"event": writer.seal()})
    await pipe.execute()
    report = await verified(redis_client, EVENTS_STREAM, KEYS)
    assert kinds(report) == {}
    assert report.writers[0].records == 2500


# -- what it detects ------------------------------------------------------------------------------


async def test_an_xdeled_record_is_a_gap(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    writer = ChainWriter(AUDIT_STREAM, keys)
    added = await writer.append(redis_client, 6)
    await redis_client.xdel(AUDIT_STREAM, added[3][0])  # seq 4
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {"gap": 1}
    (gap,) = report.writers[0].shown
    assert (gap.writer, gap.seq, gap.last_seq) == (writer.writer, 4, 4)


async def test_deleting_the_first_records_is_a_gap_without_a_checkpoint(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    added = await ChainWriter(AUDIT_STREAM, keys).append(redis_client, 5)
    await redis_client.xdel(AUDIT_STREAM, added[0][0], added[1][0])
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {"gap": 1}
    assert (report.writers[0].shown[0].seq, report.writers[0].shown[0].last_seq) == (1, 2)


async def test_deleting_the_newest_records_shows_against_the_writers_mark(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    added = await ChainWriter(AUDIT_STREAM, keys).append(redis_client, 5)
    await redis_client.xdel(AUDIT_STREAM, added[3][0], added[4][0])
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {"truncated": 1}
    finding = report.writers[0].shown[0]
    assert (finding.seq, finding.last_seq) == (4, 5)


async def test_deleting_every_record_of_a_writer_shows_against_its_mark(
    redis_client: aioredis.Redis,
) -> None:
    added = await ChainWriter(AUDIT_STREAM, KEYS).append(redis_client, 3)
    await redis_client.xdel(AUDIT_STREAM, *[entry_id for entry_id, _ in added])
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"truncated": 1}


async def test_an_edited_record_added_again_is_a_gap_and_a_forgery(
    redis_client: aioredis.Redis,
) -> None:
    """One byte of the body changed, the MAC kept, the entry replaced: XADD puts it at the end
    of the stream, so its seq is missing where it was and seen again, differently, later."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    added = await writer.append(redis_client, 3)
    entry_id, document = added[1]
    await redis_client.xdel(AUDIT_STREAM, entry_id)
    await add_raw(redis_client, AUDIT_STREAM, one_byte_changed(document, b":201", b":200"))
    await writer.append(redis_client, 1)
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"gap": 1, "forged": 1}
    assert [(f.kind, f.seq) for f in report.writers[0].shown] == [("gap", 2), ("forged", 2)]


async def test_an_edited_record_in_place_is_altered_and_nothing_else(
    redis_client: aioredis.Redis,
) -> None:
    """A record edited where it stands (as a rewrite of the stream would leave it)."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    documents = [writer.seal() for _ in range(4)]
    documents[2] = one_byte_changed(documents[2], b'"method":"POST"', b'"method":"PUT"')
    for document in documents:
        await add_raw(redis_client, AUDIT_STREAM, document)
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"altered": 1}
    assert report.writers[0].shown[0].seq == 3
    assert "mac does not match" in report.writers[0].shown[0].detail


async def test_an_edited_record_breaks_a_chain_only_stream_at_the_next_link(
    redis_client: aioredis.Redis,
) -> None:
    writer = ChainWriter(AUDIT_STREAM, None)
    documents = [writer.seal() for _ in range(4)]
    documents[1] = one_byte_changed(documents[1], b'"method":"POST"', b'"method":"PUT"')
    for document in documents:
        await add_raw(redis_client, AUDIT_STREAM, document)
    report = await verified(redis_client, AUDIT_STREAM, None)
    assert kinds(report) == {"broken_link": 1}
    assert report.writers[0].shown[0].seq == 3


async def test_a_ciphertext_swapped_between_two_records_is_altered(
    redis_client: aioredis.Redis,
) -> None:
    """Two records' bodies exchanged where they stand: both MACs fail, the chain holds."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    documents = [writer.seal() for _ in range(3)]
    first, second = b'"raw_body":"{\\"qty\\":1}"', b'"raw_body":"{\\"qty\\":2}"'
    documents[0], documents[1] = (
        one_byte_changed(documents[0], first, second),
        one_byte_changed(documents[1], second, first),
    )
    for document in documents:
        await add_raw(redis_client, AUDIT_STREAM, document)
    await writer.set_mark(redis_client)
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"altered": 2}
    assert [finding.seq for finding in report.writers[0].shown] == [1, 2]


@pytest.mark.parametrize("forgery", ["no mac", "wrong mac", "unknown key", "not json"])
async def test_a_forged_xadd_is_reported(redis_client: aioredis.Redis, forgery: str) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    await writer.append(redis_client, 3)
    intruder = ChainWriter(AUDIT_STREAM, KEYS if forgery == "wrong mac" else None)
    document = intruder.seal()
    if forgery == "wrong mac":
        head, _, _mac = document.rpartition(b":")
        document = head + b":" + os.urandom(32).hex().encode() + b'"}'
    elif forgery == "unknown key":
        document = ChainWriter(AUDIT_STREAM, integrity_keys("other"), intruder.writer).seal()
    elif forgery == "not json":
        document = b'garbage,"writer":"' + intruder.writer.encode() + b'","seq":1,"prev":""}'
    await add_raw(redis_client, AUDIT_STREAM, document)
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"forged": 1}
    assert report.writers[0].findings == 0  # the real writer's chain is intact
    assert report.unattributed.shown[0].kind == "forged"


async def test_a_record_copied_from_the_other_stream_is_forged(
    redis_client: aioredis.Redis,
) -> None:
    await ChainWriter(AUDIT_STREAM, KEYS).append(redis_client, 2)
    (_entry, event), *_ = await ChainWriter(EVENTS_STREAM, KEYS).append(redis_client, 2)
    await redis_client.xadd(AUDIT_STREAM, {"record": event})
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"forged": 1}
    assert "another stream" in report.unattributed.shown[0].detail
    assert kinds(await verified(redis_client, EVENTS_STREAM, KEYS)) == {}


async def test_an_entry_without_the_document_field_is_forged(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.xadd(AUDIT_STREAM, {"other": b"{}"})
    assert kinds(await verified(redis_client, AUDIT_STREAM, KEYS)) == {"forged": 1}


async def test_a_chain_only_forgery_of_a_seen_seq_is_caught(redis_client: aioredis.Redis) -> None:
    """Without a key anyone can seal; a second, different seq 2 still shows."""
    writer = ChainWriter(AUDIT_STREAM, None)
    await writer.append(redis_client, 3)
    fake = ChainWriter(AUDIT_STREAM, None, writer.writer)
    fake.seal()
    await add_raw(redis_client, AUDIT_STREAM, fake.seal(b'{"v":1,"forged":true}'))
    report = await verified(redis_client, AUDIT_STREAM, None)
    assert kinds(report) == {"forged": 1}
    assert report.writers[0].shown[0].seq == 2


async def test_a_chain_only_entry_that_is_not_json_is_forged(redis_client: aioredis.Redis) -> None:
    intruder = ChainWriter(AUDIT_STREAM, None)
    await add_raw(redis_client, AUDIT_STREAM, intruder.seal(b'{"v":1,,}'))
    assert kinds(await verified(redis_client, AUDIT_STREAM, None)) == {"forged": 1}


async def test_a_broken_chain_is_reported(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    """A writer (or a key holder) sealing seq 3 onto the wrong predecessor."""
    writer = ChainWriter(AUDIT_STREAM, keys)
    await writer.append(redis_client, 2)
    writer.prev = "0" * 64
    await writer.append(redis_client, 2)
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {"broken_link": 1}
    assert report.writers[0].shown[0].seq == 3


async def test_a_moved_record_is_a_gap_and_out_of_order(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    """Swapping two records' places means deleting one and adding it again at the end."""
    added = await ChainWriter(AUDIT_STREAM, keys).append(redis_client, 5)
    await redis_client.xdel(AUDIT_STREAM, added[2][0])
    await add_raw(redis_client, AUDIT_STREAM, added[2][1])
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {"gap": 1, "reordered": 1}


# -- what it accepts ------------------------------------------------------------------------------


async def test_a_record_replayed_twice_is_no_finding(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    writer = ChainWriter(AUDIT_STREAM, keys)
    added = await writer.append(redis_client, 4)
    for _ in range(2):
        await add_raw(redis_client, AUDIT_STREAM, added[1][1])
    await writer.append(redis_client, 2)
    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {}
    assert (report.writers[0].records, report.writers[0].replays) == (6, 2)


async def test_a_spool_style_replay_of_a_run_is_no_finding(redis_client: aioredis.Redis) -> None:
    """A spool segment replayed after its records were written (the mark lost in a failover):
    the same bytes, in order, again."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    added = await writer.append(redis_client, 8)
    for _entry_id, document in added[3:7]:
        await add_raw(redis_client, AUDIT_STREAM, document)
    await writer.append(redis_client, 3)
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {}
    assert (report.writers[0].records, report.writers[0].replays) == (11, 4)


async def test_since_takes_each_writers_first_record_in_view_as_its_start(
    redis_client: aioredis.Redis,
) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    old = await writer.append(redis_client, 3, age_days=1)
    await writer.append(redis_client, 3)
    await redis_client.xdel(AUDIT_STREAM, old[0][0])  # out of view: not judged
    in_view = await verified(redis_client, AUDIT_STREAM, KEYS, since=timedelta(hours=1))
    assert kinds(in_view) == {}
    assert (in_view.entries, in_view.writers[0].first_seq) == (3, 4)
    assert kinds(await verified(redis_client, AUDIT_STREAM, KEYS)) == {"gap": 1}


async def test_since_still_checks_everything_after_the_start(redis_client: aioredis.Redis) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    await writer.append(redis_client, 3, age_days=1)
    added = await writer.append(redis_client, 4)
    await redis_client.xdel(AUDIT_STREAM, added[1][0])
    report = await verified(redis_client, AUDIT_STREAM, KEYS, since=timedelta(hours=1))
    assert kinds(report) == {"gap": 1}


async def test_a_forged_checkpoint_covers_nothing(redis_client: aioredis.Redis) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    added = await writer.append(redis_client, 4)
    await redis_client.xdel(AUDIT_STREAM, added[0][0], added[1][0])
    forged = Checkpoint(AUDIT_STREAM, writer.writer, 2, "0" * 64, "1-0", "now")
    await redis_client.hset(
        checkpoints_key(AUDIT_STREAM), writer.writer, encode_checkpoint(forged, None)
    )
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {"checkpoint": 1, "gap": 1}
    # Chain only, it is taken at its word, and its digest must match the next record's prev.
    assert kinds(await verified(redis_client, AUDIT_STREAM, None)) == {"broken_link": 1}


async def test_content_findings_are_reported_per_record(redis_client: aioredis.Redis) -> None:
    await ChainWriter(AUDIT_STREAM, KEYS).append(redis_client, 3)

    def cleartext(record: dict[str, Any]) -> list[str]:
        return ["request.raw_body is cleartext"] if record["request"]["raw_body"] else []

    report = await verified(redis_client, AUDIT_STREAM, KEYS, content=cleartext)
    assert kinds(report) == {"content": 3}


# -- the walker alone -----------------------------------------------------------------------------


def test_memory_grows_with_writers_not_records() -> None:
    def peak(records: int) -> int:
        writer = ChainWriter(AUDIT_STREAM, None)
        verifier = StreamVerifier(AUDIT_STREAM, None)
        document = b'{"v":1}'
        tracemalloc.start()
        for n in range(records):
            verifier.feed(f"1-{n}", writer.seal(document))
        report = verifier.finish()
        _current, highest = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert (report.findings, report.writers[0].records) == (0, records)
        return highest

    small, large = peak(2 * WINDOW), peak(40 * WINDOW)
    assert large < small + 256 * 1024, (small, large)


def test_a_replay_older_than_the_window_is_accepted_keyed() -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    verifier = StreamVerifier(AUDIT_STREAM, KEYS, window=4)
    documents = [writer.seal(b'{"v":1}') for _ in range(10)]
    for n, document in enumerate(documents):
        verifier.feed(f"1-{n}", document)
    verifier.feed("2-0", documents[1])  # seq 2, far behind the window
    verifier.feed("2-1", documents[8])  # seq 9, inside it
    report = verifier.finish()
    assert (report.findings, report.writers[0].replays) == (0, 2)
