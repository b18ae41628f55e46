"""SPEC §7 durability, one part at a time: the exactly-once stream writer and its use of the
disk spool, against the tests' real Redis (and, for an outage, a real client on a port nobody
serves). The spool on its own is tests/test_audit_spool.py."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.audit.integrity import check
from sidecar.audit.spool import Spool, SpoolBudget, SpooledRecord
from sidecar.audit.spool_format import decode
from sidecar.audit.writer import DurableStreamWriter, WriterHooks
from sidecar.storage.embedded import free_port
from tests.helpers import wait_until

STREAM = "test:writer"
FIELD = "record"
OLD_WRITER = "0123456789abcdef"


def doc(n: int) -> bytes:
    return json.dumps({"n": n}, separators=(",", ":")).encode()


async def stream_numbers(redis: aioredis.Redis) -> list[int]:
    """The `n` of every document in the stream, oldest first."""
    entries: Any = await redis.xrange(STREAM)
    return [int(json.loads(fields[FIELD.encode()])["n"]) for _id, fields in entries]


def sealed_payload(document: bytes) -> bytes:
    """A stored document without the writer's chain members (writer, seq, prev): what was
    submitted."""
    link = check(STREAM, document, None)
    tail = f',"writer":"{link.writer}","seq":{link.seq},"prev":"{link.prev}"}}'.encode()
    assert document.endswith(tail), document
    return document[: -len(tail)] + b"}"


def spooled(spool: Spool) -> list[SpooledRecord]:
    """Every record in the spool's own directory, oldest segment first (read as the files
    are, without taking them off the replay queue)."""
    segments = sorted(spool.directory.glob("*.spool"))
    lines = [line for segment in segments for line in segment.read_bytes().splitlines(True)]
    return [decode(line, stream=STREAM, verify_chain=False) for line in lines]


def make_spool(directory: Path, budget: SpoolBudget, owner: str | None = None) -> Spool:
    """A spool for these tests, which also append unsealed documents to it directly (the app's
    spools check each document's chain members too: tests/test_audit_spool.py)."""
    if owner is None:
        return Spool(directory, "audit", budget, stream=STREAM, verify_chain=False)
    return Spool(directory, "audit", budget, stream=STREAM, owner=owner, verify_chain=False)


@pytest.fixture
def budget() -> SpoolBudget:
    return SpoolBudget(10 * 1024 * 1024)


@pytest.fixture
async def unreachable() -> AsyncIterator[aioredis.Redis]:
    """A real client for an address where nothing listens: every call fails to connect."""
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    yield client
    await client.aclose()


@asynccontextmanager
async def running(writer: DurableStreamWriter) -> AsyncIterator[asyncio.Task[None]]:
    """The writer's background task, as the app runs it, for the length of the block."""
    task = asyncio.create_task(writer.run())
    try:
        yield task
    finally:
        assert not task.done(), "the writer task ended on its own"
        # Cancel until it ends, as the app does: on Python 3.11 a cancel landing inside
        # redis-py's `wait_for` can be swallowed (gh-86296). Bounded: 50 tries of 0.1 s.
        for _ in range(50):
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=0.1)
            if done:
                break
        assert task.done(), "the writer task would not stop"


def make_writer(
    redis: aioredis.Redis, spool: Spool, hooks: WriterHooks | None = None
) -> DurableStreamWriter:
    return DurableStreamWriter(
        redis, STREAM, FIELD, spool, writer_id=spool.owner, hooks=hooks or WriterHooks()
    )


# -- the Lua script: exactly once -------------------------------------------------------------


async def test_a_batch_retried_after_the_script_ran_is_written_once(
    redis_client: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    writer = make_writer(redis_client, make_spool(tmp_path / "spool", budget))
    batch = [SpooledRecord(writer.writer_id, seq, doc(seq)) for seq in (1, 2, 3)]
    await writer._append(batch)
    # The reply was "lost": the same batch again, as the writer would retry or replay it.
    await writer._append(batch)
    assert await stream_numbers(redis_client) == [1, 2, 3]

    # A retry that overlaps what was written adds only what is new, in order.
    await writer._append([*batch[1:], SpooledRecord(writer.writer_id, 4, doc(4))])
    assert await stream_numbers(redis_client) == [1, 2, 3, 4]


async def test_another_writer_with_the_same_numbers_is_not_mistaken_for_a_retry(
    redis_client: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    first = make_writer(redis_client, make_spool(tmp_path / "spool", budget))
    second = make_writer(redis_client, make_spool(tmp_path / "spool", budget))
    assert first.writer_id != second.writer_id
    await first._append([SpooledRecord(first.writer_id, 1, doc(1))])
    await second._append([SpooledRecord(second.writer_id, 1, doc(2))])
    assert await stream_numbers(redis_client) == [1, 2]


async def test_submitted_documents_reach_the_stream_in_order(
    redis_client: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    written: list[int] = []
    spool = make_spool(tmp_path / "spool", budget)
    writer = make_writer(redis_client, spool, hooks=WriterHooks(written=written.append))
    async with running(writer):
        for n in range(600):  # more than one batch
            assert writer.submit(doc(n))

        async def all_written() -> bool:
            return await redis_client.xlen(STREAM) == 600

        await wait_until(all_written, within=5)
        assert await writer.flush(1.0)
    assert await stream_numbers(redis_client) == list(range(600))
    assert sum(written) == 600
    assert spool.empty
    assert not list(spool.directory.glob("*.spool"))


# -- outages, shutdown, restarts --------------------------------------------------------------


async def test_flush_on_the_way_out_spools_what_redis_did_not_take(
    unreachable: aioredis.Redis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    writer = make_writer(unreachable, make_spool(directory, SpoolBudget(1 << 20)))
    for n in (1, 2, 3):
        assert writer.submit(doc(n))
    # No writer task ran: everything is still in memory when the process wants to exit.
    assert not await writer.flush(0.05)
    assert writer.depth == 0
    assert [(r.writer_id, r.seq, sealed_payload(r.document)) for r in spooled(writer.spool)] == [
        (writer.writer_id, n, doc(n)) for n in (1, 2, 3)
    ]

    writer.spool.close()  # the process exits

    # The next process, with Redis back, adopts its directory and replays them.
    replayed: list[int] = []
    spool = make_spool(directory, SpoolBudget(1 << 20))
    successor = make_writer(redis_client, spool, hooks=WriterHooks(replayed=replayed.append))
    async with running(successor):

        async def drained() -> bool:
            return sum(replayed) == 3 and spool.empty

        await wait_until(drained, within=5)
    assert await stream_numbers(redis_client) == [1, 2, 3]
    assert sum(replayed) == 3


async def test_flush_with_nothing_left_over_is_true_and_spools_nothing(
    redis_client: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    spool = make_spool(tmp_path / "spool", budget)
    writer = make_writer(redis_client, spool)
    async with running(writer):
        writer.submit(doc(1))
        assert await writer.flush(5.0)
    assert spool.empty
    assert await stream_numbers(redis_client) == [1]


async def test_while_redis_is_unreachable_records_are_spooled_fsynced_and_counted(
    unreachable: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    counts: dict[str, int] = {"spooled": 0, "errors": 0}

    def spooled_hook(n: int) -> None:
        counts["spooled"] += n

    def error_hook() -> None:
        counts["errors"] += 1

    spool = make_spool(tmp_path / "spool", budget)
    hooks = WriterHooks(spooled=spooled_hook, redis_error=error_hook)
    writer = make_writer(unreachable, spool, hooks=hooks)
    async with running(writer):
        for n in range(10):
            writer.submit(doc(n))

        async def on_disk() -> bool:
            return counts["spooled"] == 10

        await wait_until(on_disk, within=5)
        assert writer.depth == 0
        assert writer.can_accept()
    assert counts["errors"] >= 1
    assert [record.seq for record in spooled(spool)] == list(range(1, 11))


async def test_a_record_that_arrives_while_the_writer_backs_off_is_spooled_at_once(
    unreachable: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    # Its request waits for a durable record: the fsync, not the rest of a 1 s backoff.
    loop = asyncio.get_running_loop()
    failed_at: list[float] = []
    writer = make_writer(
        unreachable,
        make_spool(tmp_path / "spool", budget),
        WriterHooks(redis_error=lambda: failed_at.append(loop.time())),
    )
    async with running(writer):
        writer.submit(doc(0))

        async def longest_backoff() -> bool:
            return len(failed_at) >= 5  # the fifth failure backs off for the longest, 1 s

        await wait_until(longest_backoff, within=10)
        seq = writer.submit(doc(1))
        assert seq is not None
        await writer.durable(seq, timeout_s=5)
        kept_at = loop.time()
    # Before the backoff that began at the fifth failure could have ended (it lasts 1.0 s).
    assert kept_at - failed_at[4] < 0.9


async def test_records_of_a_previous_writer_are_replayed_once_and_before_new_ones(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    old = [SpooledRecord(OLD_WRITER, seq, doc(seq)) for seq in range(1, 6)]
    with make_spool(directory, SpoolBudget(1 << 20), OLD_WRITER) as previous:
        previous.append(old)

    spool = make_spool(directory, SpoolBudget(1 << 20))
    writer = make_writer(redis_client, spool)
    assert writer.writer_id != OLD_WRITER
    async with running(writer):
        writer.submit(doc(6))
        writer.submit(doc(7))

        async def all_there() -> bool:
            return await redis_client.xlen(STREAM) == 7 and spool.empty

        await wait_until(all_there, within=5)
    assert await stream_numbers(redis_client) == [1, 2, 3, 4, 5, 6, 7]

    # The process died after Redis took the segment but before deleting it: the next one
    # finds the same records on disk again. They must not be written a second time.
    with make_spool(directory, SpoolBudget(1 << 20), OLD_WRITER) as previous:
        previous.append(old)
    spool = make_spool(directory, SpoolBudget(1 << 20))
    assert spool.adopt() == 1  # what the writer does first when it starts
    successor = make_writer(redis_client, spool)
    async with running(successor):

        async def drained() -> bool:
            return spool.empty

        await wait_until(drained, within=5)
        successor.submit(doc(8))

        async def eight() -> bool:
            return await redis_client.xlen(STREAM) == 8

        await wait_until(eight, within=5)
    assert await stream_numbers(redis_client) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_a_full_spool_makes_the_writer_refuse_new_records(
    unreachable: aioredis.Redis, tmp_path: Path
) -> None:
    """`can_accept` is what the request path asks before forwarding (SPEC §17): it says no
    while there is still room for the record it would admit, so every record it admitted
    reaches the disk — none is left in memory only."""
    spool = make_spool(tmp_path / "spool", SpoolBudget(600))
    writer = make_writer(unreachable, spool)
    accepted = 0
    async with running(writer):
        for n in range(50):
            if not writer.can_accept():
                break
            seq = writer.submit(json.dumps({"n": n, "pad": "x" * 100}).encode())
            assert seq is not None
            await writer.durable(seq, 5)  # raises if it stayed in memory only
            accepted += 1
        else:
            pytest.fail("a 600-byte spool took fifty 130-byte records")
    assert accepted > 0  # some fitted
    assert writer.depth == 0
    assert [record.seq for record in spooled(spool)] == list(range(1, accepted + 1))


async def test_a_spool_that_cannot_be_written_refuses_records_and_the_writer_lives_on(
    unreachable: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    spool = make_spool(tmp_path / "spool", budget)
    writer = make_writer(unreachable, spool)
    directory = spool.directory
    shutil.rmtree(directory)  # the disk went away under the process
    async with running(writer) as task:
        writer.submit(doc(1))

        async def refusing() -> bool:
            assert not task.done(), "the writer task died on a disk error"
            return not writer.can_accept()

        await wait_until(refusing, within=5)
        directory.mkdir(mode=0o700)  # the disk is back

        async def recovered() -> bool:
            assert not task.done(), "the writer task died on a disk error"
            return writer.can_accept() and writer.depth == 0

        await wait_until(recovered, within=5)
    assert [(record.seq, sealed_payload(record.document)) for record in spooled(spool)] == [
        (1, doc(1))
    ]


async def test_a_flush_while_a_batch_is_in_flight_loses_nothing_queued_behind_it(
    redis_client: aioredis.Redis, tmp_path: Path, budget: SpoolBudget
) -> None:
    spool = make_spool(tmp_path / "spool", budget)
    writer = make_writer(redis_client, spool)
    writer.submit(doc(1))
    writer.submit(doc(2))
    step = asyncio.create_task(writer._step())  # the writer task, sending the batch
    await asyncio.sleep(0)  # let it start; it now waits for Redis's reply
    assert not step.done()
    # Shutdown: `flush` ran out of time and spools what waits in memory (no await in between,
    # so the batch is still in flight).
    writer._spool_queue()
    writer.submit(doc(3))  # an in-flight request finishes meanwhile
    assert await step
    assert writer.depth == 1  # doc 3 still waits: it was in no batch

    assert [record.seq for record in spooled(spool)] == [1, 2]  # the copies flush made

    # Running on, the writer replays those copies (Redis has them already) and writes doc 3.
    async with running(writer):

        async def drained() -> bool:
            return spool.empty and writer.depth == 0

        await wait_until(drained, within=5)
    assert await stream_numbers(redis_client) == [1, 2, 3]
