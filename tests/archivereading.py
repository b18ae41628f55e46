"""Helpers for the tests that read the archive: configurations naming the tests' PostgreSQL, and
entries archived the way the archiver archives them (its row extraction and its batch insert
into the real tables), then trimmed from Redis as its window trim would."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis

from sidecar.archive.rows import TsSpan, extract_rows
from sidecar.archive.store import ArchiveStore
from sidecar.archive.tables import AUDIT_RECORDS, AUTH_EVENTS, ArchivedStream
from tests.helpers import wait_until, write_config

AUDIT = ArchivedStream("sidecar:audit", "record", AUDIT_RECORDS)
EVENTS = ArchivedStream("sidecar:auth-events", "event", AUTH_EVENTS)
# Any ts the tests use: the archiver's own span (the retention) is its tests' business.
EVERY_TS = TsSpan(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
STATS_DEADLINE_S = 10.0


def archive_config(path: Path, redis_url: str, archive_url: str, **sections: Any) -> str:
    """A configuration for the reading commands: where Redis and the archive are."""
    document = {"redis": {"url": redis_url}, "archive": {"url": archive_url}, **sections}
    return str(write_config(path, document))


async def archive(
    redis: aioredis.Redis, url: str, source: ArchivedStream, *, through: str = "+"
) -> list[str]:
    """Archive `source`'s entries up to `through` (an id, inclusive) as the archiver does; the
    ids inserted."""
    entries: Any = await redis.xrange(source.stream, max=through)
    rows, poison = extract_rows(entries, source, EVERY_TS)
    assert poison == []
    store = ArchiveStore(url, 5.0)
    try:
        inserted = await store.insert(source.table, rows)
    finally:
        await store.close()
    return sorted(inserted.entry_ids, key=lambda entry_id: tuple(map(int, entry_id.split("-"))))


async def trim_before(redis: aioredis.Redis, stream: str, entry_id: str) -> None:
    """Remove the entries before `entry_id` from Redis, as the archiver's window trim does."""
    await redis.xtrim(stream, minid=entry_id, approximate=False)


def execute(url: str, statement: str, params: tuple[Any, ...] = ()) -> int:
    """Run one statement on the archive (a test's tampering); the rows it touched."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).rowcount


async def wait_for_row_statistics(url: str, table: str, rows: int) -> None:
    """Until PostgreSQL's live-row statistics for `table`'s partitions reach `rows`: a session
    flushes them as it ends, a moment after the client has closed it."""

    async def counted() -> bool:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT coalesce(sum(pg_stat_get_live_tuples(inhrelid)), 0) FROM pg_inherits "
                "WHERE inhparent = to_regclass(%s)",
                (table,),
            )
            found = await cursor.fetchone()
        return found is not None and int(found[0]) >= rows

    await wait_until(counted, within=STATS_DEADLINE_S, interval=0.1)
