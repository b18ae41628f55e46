"""The archive's figures (SPEC §15): how fast it inserts, what a record costs in Redis and in
PostgreSQL, and whether Redis stays flat under sustained load once the window is full.

- Throughput: a stream filled with copies of a real record (taken from the `sidecar (archive)`
  target during the rounds) is drained by an `Archiver` run here, pass after pass, as a serving
  process runs it; records/s = records / seconds until the stream is drained. The database
  runs with fsync on (`EmbeddedPostgres(durable=True)`), as a production one does.
- Bytes per record: `MEMORY USAGE` of the filled stream over its length, before archiving;
  `pg_total_relation_size` of the record table's partitions over their rows, after.
- Flat memory: the `sidecar (archive)` target under wrk for a while, its stream's length and
  `MEMORY USAGE` sampled every second; the archiver trims the stream to its window, so after
  the first window the samples stop growing.

Only the proxy's throughput with the archive on is measured in the rounds (a target of its own,
`sidecar (archive)`, against `sidecar`); everything here runs after them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import psycopg
import redis
import redis.asyncio as aioredis

from sidecar.archive.archiver import Archiver
from sidecar.archive.schema import migrate
from sidecar.archive.store import ArchiveStore
from sidecar.archive.tables import AUDIT_RECORDS, ArchivedStream
from sidecar.audit.crypto import BodyCipher
from sidecar.config import Archive
from sidecar.metrics import Metrics

# The `sidecar (archive)` target's streams: its own, so the harness's XTRIM of the others (it
# plays their consumer) never removes a record its archiver has yet to copy.
STREAM = "bench-archive:audit"
EVENTS_STREAM = "bench-archive:auth-events"
WINDOW_S = 10  # archive.redis_window_s of that target: short, so the run sees it fill
FILL_STREAM = "bench-archive-fill:audit"
FILL_RECORDS = 20_000
_FILL_CHUNK = 1_000
_DRAIN_DEADLINE_S = 300.0
_SAMPLE_EVERY_S = 1.0


@dataclass(slots=True)
class ArchiveFigures:
    """What the archive phase measured (None: not measured, with `note` saying why)."""

    note: str = ""
    records: int = 0
    seconds: float | None = None
    redis_bytes_per_record: float | None = None
    postgres_bytes_per_record: float | None = None
    record_bytes: int | None = None  # the JSON document itself
    # (seconds into the load, stream length, MEMORY USAGE bytes) for the flat-memory check
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    encrypted: ArchiveFigures | None = None  # the same record with its content encrypted

    @property
    def records_per_s(self) -> float | None:
        if not self.seconds:
            return None
        return self.records / self.seconds


def sample_record(redis_url: str) -> bytes | None:
    """The newest record of the archive target's stream (a real one, with its chain)."""
    client = redis.Redis.from_url(redis_url)
    try:
        newest = client.xrevrange(STREAM, count=1)
    finally:
        client.close()
    if not newest:
        return None
    _entry_id, fields = newest[0]
    value = (fields or {}).get(b"record")
    return value if isinstance(value, bytes) else None


def encrypted_copy(record: bytes) -> bytes:
    """`record` as a sidecar with `audit.encryption_key_file` writes it: its content fields
    sealed (AES-GCM, base64), which neither Redis nor PostgreSQL can compress."""
    cipher = BodyCipher([("bench", os.urandom(32))])
    return orjson.dumps(cipher.encrypt_record(orjson.loads(record)))


def measure_throughput(redis_url: str, archive_url: str, record: bytes) -> ArchiveFigures:
    """Fill a stream with copies of `record`, drain it into the archive, and size both."""
    return asyncio.run(_throughput(redis_url, archive_url, record))


async def _throughput(redis_url: str, archive_url: str, record: bytes) -> ArchiveFigures:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=30)
    figures = ArchiveFigures(records=FILL_RECORDS, record_bytes=len(record))
    try:
        await client.delete(FILL_STREAM)
        for _ in range(FILL_RECORDS // _FILL_CHUNK):
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(_FILL_CHUNK):
                    pipe.xadd(FILL_STREAM, {"record": record})
                await pipe.execute()
        memory = await client.memory_usage(FILL_STREAM, samples=0)
        figures.redis_bytes_per_record = (memory or 0) / FILL_RECORDS
        async with await psycopg.AsyncConnection.connect(archive_url, autocommit=True) as conn:
            await migrate(conn)
        archiver = Archiver(
            client,
            ArchiveStore(archive_url, timeout_s=30),
            [ArchivedStream(FILL_STREAM, "record", AUDIT_RECORDS)],
            consumer="bench",
            settings=Archive(url=archive_url),
            retention_days=90,
            integrity=None,
            metrics=Metrics(),
        )
        try:
            figures.seconds = await _drain(archiver)
        finally:
            await archiver.close()
        figures.postgres_bytes_per_record = await _postgres_bytes_per_record(archive_url)
    finally:
        await client.delete(FILL_STREAM)
        await client.aclose()
    return figures


async def _drain(archiver: Archiver) -> float:
    """Seconds until every record of the fill stream is archived."""
    started = time.perf_counter()
    archived = 0
    deadline = started + _DRAIN_DEADLINE_S
    while archived < FILL_RECORDS:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"archive: {archived} of {FILL_RECORDS} archived in time")
        outcome = await archiver.archive_pass(FILL_STREAM, block_ms=100)
        archived += outcome.archived
    return time.perf_counter() - started


async def _postgres_bytes_per_record(archive_url: str) -> float | None:
    async with await psycopg.AsyncConnection.connect(archive_url) as conn:
        cursor = await conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0),"
            " (SELECT count(*) FROM audit_records)"
            " FROM pg_inherits WHERE inhparent = 'audit_records'::regclass"
        )
        row = await cursor.fetchone()
    if row is None or not row[1]:
        return None
    return float(row[0]) / float(row[1])


class StreamSampler:
    """Samples the archive target's stream (length, MEMORY USAGE) every second in a thread,
    for as long as the `with` block runs."""

    def __init__(self, redis_url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = redis.Redis.from_url(redis_url)
        self._clock = clock
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StreamSampler:
        self._started = self._clock()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_EVERY_S):
            length = int(self._client.xlen(STREAM))
            memory = int(self._client.memory_usage(STREAM, samples=0) or 0)
            self.samples.append((self._clock() - self._started, length, memory))


def flat_verdict(samples: list[tuple[float, int, int]], window_s: float) -> str:
    """Whether the stream stopped growing once the window was full. The archiver trims every
    10 s, so the stream is a sawtooth between one window and a window plus a trim period of
    traffic: the peaks (entries; MEMORY USAGE follows them, with its node fill's noise) of the
    last third are compared with the middle third's, both past the first window and trim."""
    settled = [s for s in samples if s[0] > 2 * window_s + 2]
    if len(settled) < 6:
        return "not enough samples past the window"
    third = len(settled) // 3
    middle = max(entries for _t, entries, _m in settled[third : 2 * third])
    last = max(entries for _t, entries, _m in settled[2 * third :])
    peak_mib = max(memory for _t, _n, memory in settled) / 2**20
    growth = last / middle - 1 if middle else float("inf")
    shape = "flat" if growth <= 0.15 else "growing"
    return (
        f"{shape}: at most {last:,} entries in the last third against {middle:,} in the middle "
        f"({growth:+.0%}); peak {peak_mib:.0f} MiB"
    )
