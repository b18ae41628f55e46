"""Reading a stream's entries from the archive and the Redis window together (SPEC §15).

The archiver copies each entry into PostgreSQL and only then lets Redis trim it (by `MINID`), so
the stream in Redis is always a suffix, by id, of everything written, and the archive holds the
rest: everything before that suffix and, once caught up, most of the suffix too. Readers merge
the two by stream id. Where both hold an entry the archive's row wins: it is the copy that
outlives Redis, so an edit to it is what `audit verify` must see. An entry only Redis holds (not
archived yet, or pending with a replica that died mid-batch) is still read.

Every entry comes out as Redis returns one, `(b"<ms>-<seq>", {b"<field>": <document>})`: the
archive keeps the field's exact bytes (`document`), so decoding, decryption and the integrity
check are the same for both sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from sidecar.archive.checkpoints import ChainCheckpoint
from sidecar.archive.database import Connection
from sidecar.archive.tables import ArchivedStream
from sidecar.audit.checkpoints import stream_id_key
from sidecar.storage.client import RedisClient

Entry = tuple[bytes, dict[bytes, bytes]]  # (stream id, fields) as redis-py returns them
StreamId = tuple[int, int]  # (ms, seq)

PAGE = 500
# A record reaches the stream after its ts (a spool replay), or before it with the host's clock
# ahead of Redis's. Where a bound by stream id must be turned into one by ts (the archive's
# partitions and indexes are by ts), it is widened by this much. The CLI's --since uses the same.
CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RowFilter:
    """What the archive decides in SQL, on the columns it keeps beside the document (the ts
    and stream-id bounds on the partition key and the primary key); None is no filter."""

    since: datetime | None = None  # the record's own ts, at or after
    key_name: str | None = None
    status: tuple[int, int] | None = None  # an inclusive range: (404, 404), (400, 499)
    from_id: StreamId | None = None  # stream ids at or after


def format_id(stream_id: StreamId) -> bytes:
    """`(ms, seq)` as Redis writes it."""
    return f"{stream_id[0]}-{stream_id[1]}".encode()


def parse_id(entry_id: bytes) -> StreamId:
    """A Redis stream id as a pair that sorts as Redis orders ids."""
    return stream_id_key(entry_id.decode("ascii"))


async def merge_by_id(
    archive: AsyncIterator[Entry], window: AsyncIterator[Entry]
) -> AsyncIterator[Entry]:
    """Both sources (each in stream-id order) as one, in stream-id order, each id once: the
    archive's where both hold it."""
    head_a = await anext(archive, None)
    head_w = await anext(window, None)
    while head_a is not None or head_w is not None:
        if head_w is None or (head_a is not None and parse_id(head_a[0]) <= parse_id(head_w[0])):
            assert head_a is not None
            if head_w is not None and head_w[0] == head_a[0]:
                head_w = await anext(window, None)
            yield head_a
            head_a = await anext(archive, None)
        else:
            yield head_w
            head_w = await anext(window, None)


async def archive_rows(
    conn: Connection, source: ArchivedStream, rows: RowFilter, *, page: int = PAGE
) -> AsyncIterator[Entry]:
    """The archive's rows that pass `rows`, in stream-id order, read through a server-side
    cursor `page` rows at a time (the sort is PostgreSQL's; memory here stays one page)."""
    conditions, params = _conditions(rows)
    query = sql.SQL(
        "SELECT stream_ms, stream_seq, document FROM {table} WHERE {conditions} "
        "ORDER BY stream_ms, stream_seq"
    ).format(table=sql.Identifier(source.table.name), conditions=conditions)
    field = source.field.encode()
    async with conn.transaction(), conn.cursor(name="sidecar_archive_rows") as cursor:
        cursor.itersize = page
        await cursor.execute(query, params)
        async for ms, seq, document in cursor:
            yield format_id((ms, seq)), {field: document.encode()}


async def archive_tail(
    conn: Connection, source: ArchivedStream, count: int, *, before: StreamId | None
) -> list[Entry]:
    """The last `count` rows by stream id (before `before`, when given), oldest first.

    There is no index by stream id, so the newest rows are found by ts (the (ts) index, newest
    first, per partition) and only those within `CLOCK_SKEW` of them are sorted by id: a record
    whose ts is further than that from its stream id's time (a long spool replay) can be missed
    here, never shown out of order; `audit query` still finds it."""
    id_bound, ts_bound = sql.SQL("TRUE"), sql.SQL("TRUE")
    params: dict[str, Any] = {"count": count, "skew": CLOCK_SKEW}
    if before is not None:
        id_bound = sql.SQL("(stream_ms, stream_seq) < (%(ms)s, %(seq)s)")
        ts_bound = sql.SQL("ts < to_timestamp(%(ms)s / 1000.0) + %(skew)s")
        params |= {"ms": before[0], "seq": before[1]}
    table = sql.Identifier(source.table.name)
    # Two statements, not one with a subquery: the second then sees its lower bound as a
    # constant, so PostgreSQL plans it on the index and the last partitions only.
    cursor = await conn.execute(
        sql.SQL(
            "SELECT min(ts) FROM (SELECT ts FROM {table} WHERE {ts_bound} "
            "ORDER BY ts DESC LIMIT %(count)s) newest"
        ).format(table=table, ts_bound=ts_bound),
        params,
    )
    oldest = await cursor.fetchone()
    if oldest is None or oldest[0] is None:
        return []
    params["low"] = oldest[0] - CLOCK_SKEW
    query = sql.SQL(
        "SELECT stream_ms, stream_seq, document FROM {table} "
        "WHERE ts >= %(low)s AND {ts_bound} AND {id_bound} "
        "ORDER BY stream_ms DESC, stream_seq DESC LIMIT %(count)s"
    ).format(table=table, id_bound=id_bound, ts_bound=ts_bound)
    cursor = await conn.execute(query, params)
    field = source.field.encode()
    found = [
        (format_id((ms, seq)), {field: doc.encode()}) for ms, seq, doc in await cursor.fetchall()
    ]
    return found[::-1]


async def window_range(redis: RedisClient, stream: str, start: str = "-") -> AsyncIterator[Entry]:
    """The Redis stream's entries from id `start` on (XRANGE syntax), in pages."""
    while True:
        entries: Any = await redis.xrange(stream, min=start, count=PAGE)
        for entry in entries:
            yield entry
        if len(entries) < PAGE:
            return
        start = "(" + entries[-1][0].decode()


async def tail(
    conn: Connection, redis: RedisClient, source: ArchivedStream, count: int
) -> list[Entry]:
    """The last `count` entries of the stream, oldest first: Redis's, and the archive's before
    the first of those when Redis holds fewer (being a suffix, it has the newest)."""
    window: Any = await redis.xrevrange(source.stream, count=count)
    newest = list(reversed(window))
    if len(newest) == count:
        return newest
    before = parse_id(newest[0][0]) if newest else None
    older = await archive_tail(conn, source, count - len(newest), before=before)
    return older + newest


def read(
    conn: Connection,
    redis: RedisClient,
    source: ArchivedStream,
    rows: RowFilter,
    *,
    window_start: str,
) -> AsyncIterator[Entry]:
    """The archive's rows passing `rows` merged with the Redis entries from `window_start` on.
    Redis entries are not filtered: the caller tests every entry (the same test for both)."""
    return merge_by_id(
        archive_rows(conn, source, rows), window_range(redis, source.stream, window_start)
    )


async def archive_checkpoints(
    conn: Connection, stream: str
) -> list[tuple[ChainCheckpoint, str | None]]:
    """Where partition drops cut each writer's chain in `stream`, with each one's `mac` column
    as stored (unchecked: `audit verify` checks it when the writer's records need it)."""
    cursor = await conn.execute(
        "SELECT writer, seq, digest, cut_at, mac FROM chain_checkpoints WHERE stream = %s",
        (stream,),
    )
    return [
        (ChainCheckpoint(stream, writer, seq, digest, cut_at), mac)
        for writer, seq, digest, cut_at, mac in await cursor.fetchall()
    ]


def _conditions(rows: RowFilter) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    if rows.since is not None:
        parts.append(sql.SQL("ts >= %(since)s"))
        params["since"] = rows.since
    if rows.key_name is not None:
        parts.append(sql.SQL("key_name = %(key_name)s"))
        params["key_name"] = rows.key_name
    if rows.status is not None:
        parts.append(sql.SQL("status BETWEEN %(status_low)s AND %(status_high)s"))
        params["status_low"], params["status_high"] = rows.status
    if rows.from_id is not None:
        parts.append(sql.SQL("(stream_ms, stream_seq) >= (%(from_ms)s, %(from_seq)s)"))
        # The partitions are by ts: a bound on it lets PostgreSQL skip the older ones.
        parts.append(sql.SQL("ts >= to_timestamp(%(from_ms)s / 1000.0) - %(skew)s"))
        params |= {"from_ms": rows.from_id[0], "from_seq": rows.from_id[1], "skew": CLOCK_SKEW}
    return sql.SQL(" AND ").join(parts), params
