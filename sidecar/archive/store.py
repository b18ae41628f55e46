"""The archive's writes: rows inserted exactly once with their activity counters, the day
partitions they need made on demand, and the hourly upkeep, over one connection that is
opened (and the schema migrated) on first use and again after any failure.

Exactly once: a batch is one statement, `INSERT … SELECT … FROM unnest(…) ON CONFLICT DO
NOTHING RETURNING …`, whose inserted rows (only those) feed the counters' upsert in the same
statement. A batch retried after a lost reply, or claimed by another replica after its reader
died, inserts and counts nothing the second time. Rows and counters are taken in key order,
so two replicas upserting the same minutes lock them in the same order and never deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from psycopg import sql

from sidecar.archive.database import ArchiveUnavailable, Connection, connect, database_errors
from sidecar.archive.partitions import (
    Partition,
    create_partitions,
    days_around,
    every_table,
)
from sidecar.archive.retention import drop_expired
from sidecar.archive.rows import Row
from sidecar.archive.schema import migrate
from sidecar.archive.tables import ACTIVITY_MINUTES, ArchivedStream, Table
from sidecar.audit.integrity import IntegrityKeys

log = structlog.get_logger("sidecar.archive.store")

# The client's own limit on a call, past the server's statement timeout: a server that
# stopped answering (frozen, a network partition) must not hold the archiver for ever.
_CLIENT_MARGIN = 2.0


def insert_statement(table: Table) -> sql.Composed:
    """The one statement that inserts a batch into `table` (one array parameter per column)
    and counts the rows it inserted in `activity_minutes`; it returns their stream ids."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names)
    arrays = sql.SQL(", ").join(
        # `%b`: binary parameters. In text format psycopg escapes every quote of every JSON
        # document in Python, which was half the CPU of archiving a batch.
        sql.SQL("%b::{}[]").format(sql.SQL(column.type))
        for column in table.columns
    )
    insert = sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) ORDER BY 2, 3 "
        "ON CONFLICT DO NOTHING RETURNING stream_ms, stream_seq"
    ).format(table=sql.Identifier(table.name), columns=columns, arrays=arrays)
    if table.outcome is None:
        return sql.Composed([insert])
    return sql.SQL(
        "WITH inserted AS ({insert}, ts, coalesce(key_id, '') AS key_id, {outcome} AS outcome), "
        "counted AS (INSERT INTO {counters} (ts, key_id, outcome, count) "
        "SELECT date_trunc('minute', ts), key_id, outcome, count(*) FROM inserted "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
        "ON CONFLICT (ts, key_id, outcome) "
        "DO UPDATE SET count = {counters}.count + EXCLUDED.count) "
        "SELECT stream_ms, stream_seq FROM inserted"
    ).format(
        insert=insert,
        outcome=sql.SQL(table.outcome),
        counters=sql.Identifier(ACTIVITY_MINUTES),
    )


@dataclass(frozen=True, slots=True)
class Inserted:
    """What a batch insert did: the stream ids of the rows it inserted; the others were in the
    archive already."""

    entry_ids: frozenset[str]


class ArchiveStore:
    """One connection to the archive, shared by the archiver's tasks one statement at a time."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._partitions: set[Partition] = set()  # known to exist: no catalogue look-up
        self._statements: dict[str, sql.Composed] = {}

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still fail on its next statement)."""
        return self._conn is not None and not self._conn.closed

    async def insert(self, table: Table, rows: Sequence[Row]) -> Inserted:
        """Insert `rows` into `table` in one transaction with their counters, making the day
        partitions they need first. `RowsRefused` when a row's values are refused (nothing
        of the batch is inserted); `ArchiveUnavailable` when the database cannot be used."""
        if not rows:
            return Inserted(frozenset())
        statement = self._statements.get(table.name)
        if statement is None:
            statement = self._statements[table.name] = insert_statement(table)
        days = {row.day for row in rows}
        tables = (table.name, ACTIVITY_MINUTES) if table.outcome else (table.name,)
        columns = list(zip(*(row.values for row in rows), strict=True))
        async with self._lock:
            conn = await self._connection()
            async with self._bounded():
                await self._ensure(conn, every_table(days, tables))
                cursor = await conn.execute(statement, [list(values) for values in columns])
                inserted = await cursor.fetchall()
        return Inserted(frozenset(f"{ms}-{seq}" for ms, seq in inserted))

    async def maintain(
        self,
        streams: Sequence[ArchivedStream],
        retention_days: int,
        integrity: IntegrityKeys | None,
    ) -> list[str]:
        """The hourly pass: make the partitions of yesterday to three days ahead, then drop
        the days older than the retention (checkpointing the chains first); what it dropped."""
        async with self._lock:
            conn = await self._connection()
            async with self._bounded():
                cursor = await conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date")
                row = await cursor.fetchone()
                assert row is not None
                await create_partitions(conn, every_table(days_around(row[0])))
                dropped = await drop_expired(conn, streams, retention_days, integrity)
            # What was dropped may be asked for again (a record on the boundary): look it up.
            self._partitions.clear()
            return dropped

    async def close(self) -> None:
        """Close the connection, if one is open."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        self._partitions.clear()  # it may be another database now (a failover)
        conn = await connect(self._url, self._timeout_s)
        try:
            async with self._bounded():
                version = await migrate(conn)
        except BaseException:
            await conn.close()
            raise
        log.info("archive connected", schema_version=version)
        self._conn = conn
        return conn

    async def _ensure(self, conn: Connection, partitions: list[Partition]) -> None:
        needed = [partition for partition in partitions if partition not in self._partitions]
        if needed:
            await create_partitions(conn, needed)
            self._partitions.update(needed)

    @asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        """A block under the client's own deadline, its psycopg errors sorted by
        `database_errors`. Any failure but refused rows closes the connection: the next call
        starts on a fresh one, never on one in an unknown state."""
        try:
            with database_errors():
                async with asyncio.timeout(self._timeout_s * _CLIENT_MARGIN + 1):
                    yield
        except ArchiveUnavailable:
            await self.close()
            raise
