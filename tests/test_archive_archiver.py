"""The archiver against the tests' real Redis and PostgreSQL, one step at a time: batches land
once with their counters however often they are inserted, idle entries of a stopped reader are
claimed, poison is parked with its reason, the stream keeps only its window and never an
unarchived entry less, and the hourly pass drops expired days after checkpointing the chains.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis.asyncio as aioredis

from sidecar.archive.checkpoints import ChainCheckpoint, checkpoint_signed
from sidecar.archive.rows import TsSpan, extract_rows
from sidecar.archive.schema import SCHEMA_VERSION, migrate
from sidecar.archive.store import ArchiveStore
from sidecar.archive.tables import AUDIT_RECORDS
from sidecar.archive.window import GROUP, ensure_group
from sidecar.audit.integrity import IntegrityKeys
from sidecar.metrics import Metrics
from tests.archivesupport import (
    RECORDS,
    WRITER,
    archived_request_ids,
    chained,
    counted,
    document,
    make_archiver,
    query,
)
from tests.helpers import wait_until
from tests.keysupport import metric_value

NOW = datetime.now(UTC)


async def add(
    redis: aioredis.Redis, documents: list[dict[str, Any]], ids: list[str] | None = None
) -> list[str]:
    """XADD each document to the records stream (at `ids`, else now); their ids."""
    added = []
    for position, fields in enumerate(documents):
        entry_id = ids[position] if ids else "*"
        added_id: Any = await redis.xadd(
            RECORDS.stream, {"record": json.dumps(fields)}, id=entry_id
        )
        added.append(added_id.decode())
    return added


async def test_migrate_is_idempotent_and_safe_from_several_processes_at_once(
    archive_url: str,
) -> None:
    connections = [await psycopg.AsyncConnection.connect(archive_url, autocommit=True)
                   for _ in range(3)]  # fmt: skip
    try:
        versions = await asyncio.gather(*(migrate(conn) for conn in connections))
        assert versions == [SCHEMA_VERSION] * 3
        assert await migrate(connections[0]) == SCHEMA_VERSION  # and again: nothing to do
    finally:
        for conn in connections:
            await conn.close()
    steps = await query(archive_url, "SELECT version FROM sidecar_schema_version")
    assert steps == [(1,)]  # each step ran once


async def test_a_batch_inserted_twice_at_once_lands_once_and_is_counted_once(
    archive_url: str,
) -> None:
    documents = [document(f"twice-{n}", NOW, key_id="k1" if n % 2 else None) for n in range(40)]
    entries = [(f"{1000 + n}-0".encode(), {b"record": json.dumps(d).encode()})
               for n, d in enumerate(documents)]  # fmt: skip
    rows, poison = extract_rows(entries, RECORDS, TsSpan.around(NOW, 90))
    assert poison == []
    stores = [ArchiveStore(archive_url, 5), ArchiveStore(archive_url, 5)]
    try:
        results = await asyncio.gather(*(store.insert(AUDIT_RECORDS, rows) for store in stores))
        again = await stores[0].insert(AUDIT_RECORDS, rows)
    finally:
        for store in stores:
            await store.close()
    # Each row was inserted by whichever store got to it first, and by no other; the retry
    # inserted nothing.
    assert sum(len(result.entry_ids) for result in results) == 40
    assert results[0].entry_ids.isdisjoint(results[1].entry_ids)
    assert again.entry_ids == frozenset()
    assert set((await archived_request_ids(archive_url)).values()) == {1}
    assert len(await archived_request_ids(archive_url)) == 40
    assert await counted(archive_url) == {("k1", "allowed"): 20, ("", "allowed"): 20}


async def test_entries_a_stopped_reader_left_pending_are_claimed_and_archived_once(
    redis_client: aioredis.Redis, archive_url: str
) -> None:
    await ensure_group(redis_client, RECORDS.stream)
    ids = await add(redis_client, [document(f"claim-{n}", NOW) for n in range(10)])
    # A reader that took the batch and died mid-insert: half of it was committed.
    taken: Any = await redis_client.xreadgroup(GROUP, "dead-reader", {RECORDS.stream: ">"})
    rows, _ = extract_rows(taken[0][1][:5], RECORDS, TsSpan.around(NOW, 90))
    store = ArchiveStore(archive_url, 5)
    await store.insert(AUDIT_RECORDS, rows)
    await store.close()
    metrics = Metrics()
    archiver = make_archiver(redis_client, archive_url, claim_idle_s=0.05, metrics=metrics)
    outcomes = []

    async def claimed() -> bool:
        outcomes.append(await archiver.archive_pass(RECORDS.stream))
        return outcomes[-1].taken > 0

    try:
        await wait_until(claimed, within=5)  # once the entries have been idle 50 ms
    finally:
        await archiver.close()
    assert (outcomes[-1].taken, outcomes[-1].archived, outcomes[-1].duplicate) == (10, 5, 5)
    assert await archived_request_ids(archive_url) == {f"claim-{n}": 1 for n in range(10)}
    assert await counted(archive_url) == {("", "allowed"): 10}
    pending: Any = await redis_client.xpending(RECORDS.stream, GROUP)
    assert pending["pending"] == 0
    text = metrics.render().decode()
    for outcome in ("archived", "duplicate"):
        labels = {"outcome": outcome, "stream": RECORDS.stream}  # in exposition order
        assert metric_value(text, "sidecar_archive_records_total", labels) == 5
    assert len(ids) == 10


async def test_poison_entries_are_parked_with_their_reason_and_acknowledged(
    redis_client: aioredis.Redis, archive_url: str
) -> None:
    archiver = make_archiver(redis_client, archive_url)
    await archiver.maintain()  # connects and migrates
    # A row PostgreSQL refuses though it reads well: found by retrying the batch row by row.
    await query(
        archive_url, "ALTER TABLE audit_records ADD CONSTRAINT no_brew CHECK (method <> 'BREW')"
    )
    good = [document("good-1", NOW), document("good-2", NOW)]
    refused = document("brew", NOW, method="BREW")
    old = document("old", NOW - timedelta(days=120))
    first = await add(redis_client, [good[0]])
    await redis_client.xadd(RECORDS.stream, {"record": b"{torn"})
    await redis_client.xadd(RECORDS.stream, {"other": b"x"})
    await add(redis_client, [refused, old, good[1]])
    try:
        outcome = await archiver.archive_pass(RECORDS.stream)
    finally:
        await archiver.close()
    assert (outcome.taken, outcome.archived, outcome.dead_letter) == (6, 2, 4)
    assert await archived_request_ids(archive_url) == {"good-1": 1, "good-2": 1}
    parked: Any = await redis_client.xrange(RECORDS.dead_letter)
    reasons = {fields[b"reason"].decode(): fields for _id, fields in parked}
    assert sorted(reasons) == [
        "no 'record' field",
        "the 'record' field is not UTF-8 JSON",
        "the database refused the row (CheckViolation)",
        "ts outside the archive's range",
    ]
    torn = reasons["the 'record' field is not UTF-8 JSON"]
    assert (torn[b"field"], torn[b"value"]) == (b"record", b"{torn")
    assert json.loads(reasons["the database refused the row (CheckViolation)"][b"value"]) == refused
    assert all(fields[b"id"].decode() > first[0] for fields in reasons.values())
    pending: Any = await redis_client.xpending(RECORDS.stream, GROUP)
    assert pending["pending"] == 0  # parked and acknowledged: not retried for ever


async def test_the_stream_keeps_its_window_and_never_loses_an_unarchived_entry(
    redis_client: aioredis.Redis, archive_url: str
) -> None:
    archiver = make_archiver(redis_client, archive_url, batch=4, redis_window_s=3600)
    await ensure_group(redis_client, RECORDS.stream)
    redis_ms = int((await redis_client.time())[0]) * 1000
    two_hours_ago = redis_ms - 7_200_000
    old_ids = [f"{two_hours_ago + n}-0" for n in range(10)]
    await add(redis_client, [document(f"old-{n}", NOW) for n in range(10)], ids=old_ids)
    recent = await add(redis_client, [document(f"new-{n}", NOW) for n in range(3)])
    try:
        before = await archiver.tend(RECORDS.stream)
        # Nothing archived yet: all of it older than the window, none of it trimmed.
        assert (before.trimmed, before.length) == (0, 13)
        assert 7190 <= before.lag_s <= 7300
        await archiver.archive_pass(RECORDS.stream)  # the first 4 archived
        held = await archiver.tend(RECORDS.stream)
        assert (held.trimmed, held.length) == (4, 9)
        first: Any = await redis_client.xrange(RECORDS.stream, count=1)
        assert first[0][0].decode() == old_ids[4]  # the oldest unarchived entry stays
        for _ in range(3):
            await archiver.archive_pass(RECORDS.stream)
        caught_up = await archiver.tend(RECORDS.stream)
    finally:
        await archiver.close()
    assert (caught_up.trimmed, caught_up.lag_ms, caught_up.pending) == (6, 0, 0)
    left: Any = await redis_client.xrange(RECORDS.stream)
    assert [entry_id.decode() for entry_id, _ in left] == recent  # the window: last hour's
    assert len(await archived_request_ids(archive_url)) == 13


async def test_the_hourly_pass_drops_days_past_the_retention_after_checkpointing_each_chain(
    redis_client: aioredis.Redis, archive_url: str
) -> None:
    keys = IntegrityKeys.of([("k1", b"k" * 32)])
    old_day, kept_day = NOW - timedelta(days=100), NOW - timedelta(days=89)
    documents = [document(f"r{n}", old_day) for n in range(3)] + [document("kept", kept_day)]
    sealed = chained(RECORDS.stream, documents, keys)
    entries = [(f"{n + 1}-0".encode(), {b"record": s.document}) for n, s in enumerate(sealed)]
    rows, _ = extract_rows(entries, RECORDS, TsSpan(NOW - timedelta(days=200), NOW))
    store = ArchiveStore(archive_url, 5)
    await store.insert(AUDIT_RECORDS, rows)  # makes the old day's partitions on demand
    await store.close()
    old_partition = f"audit_records_p{old_day:%Y%m%d}"
    archiver = make_archiver(redis_client, archive_url, integrity=keys, retention_days=90)
    try:
        dropped = await archiver.maintain()
        again = await archiver.maintain()
    finally:
        await archiver.close()
    assert dropped == [old_partition, f"activity_minutes_p{old_day:%Y%m%d}"]
    assert again == []
    assert await query(archive_url, "SELECT to_regclass(%s)", old_partition) == [(None,)]
    assert await archived_request_ids(archive_url) == {"kept": 1}
    (row,) = await query(
        archive_url, "SELECT stream, writer, seq, digest, mac, cut_at FROM chain_checkpoints"
    )
    stream, writer, seq, digest, mac, cut_at = row
    # The writer's last record in the dropped day: what its next record (kept) chains to.
    assert (stream, writer, seq, digest) == (RECORDS.stream, WRITER, 3, sealed[2].digest)
    assert checkpoint_signed(ChainCheckpoint(stream, writer, seq, digest, cut_at), mac, keys)
    ahead = f"audit_records_p{NOW + timedelta(days=3):%Y%m%d}"
    assert await query(archive_url, "SELECT to_regclass(%s)::text", ahead) == [(ahead,)]
