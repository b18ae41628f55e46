"""The day partitions: one per table and UTC day, named `<table>_pYYYYMMDD`, created ahead of
the records that need them and listed for retention.

A record never goes to a DEFAULT partition: one would have to be emptied before any later
partition overlapping its rows could be created. Creating a partition takes the archive's
advisory lock (`schema.ARCHIVE_LOCK`), so replicas making the same day at once wait for each
other instead of failing on the catalogue's unique index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from psycopg import sql

from sidecar.archive.database import Connection
from sidecar.archive.tables import AHEAD_DAYS, PARTITIONED

ARCHIVE_LOCK = 7_305_014_331_520_164_713  # pg_advisory_xact_lock key: "sidecar archive"
BEHIND_DAYS = 1  # made at every pass from yesterday (a spool replayed after midnight) on
_NAME = re.compile(r"(?P<table>[a-z_]+)_p(?P<day>[0-9]{8})\Z")


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One day of one table."""

    table: str
    day: date

    @property
    def name(self) -> str:
        """`<table>_pYYYYMMDD`."""
        return f"{self.table}_p{self.day:%Y%m%d}"

    @property
    def start(self) -> datetime:
        """The first instant it holds (UTC midnight)."""
        return datetime.combine(self.day, datetime.min.time(), UTC)

    @property
    def end(self) -> datetime:
        """The first instant it no longer holds."""
        return self.start + timedelta(days=1)


def parse_partition(name: str) -> Partition | None:
    """The partition a table name stands for, or None when it is not one of ours."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        day = datetime.strptime(match.group("day"), "%Y%m%d").date()
    except ValueError:
        return None
    return Partition(match.group("table"), day)


def days_around(today: date) -> list[date]:
    """The days whose partitions exist ahead of need: yesterday to `AHEAD_DAYS` ahead."""
    return [today + timedelta(days=offset) for offset in range(-BEHIND_DAYS, AHEAD_DAYS + 1)]


def every_table(days: Iterable[date], tables: Sequence[str] = PARTITIONED) -> list[Partition]:
    """Each of `tables` (all partitioned tables by default) on each of `days`."""
    return sorted({Partition(table, day) for table in tables for day in days})


async def create_partitions(conn: Connection, partitions: Iterable[Partition]) -> list[str]:
    """Create those of `partitions` that do not exist yet; the names created.

    Runs in its own transaction under the archive lock; one that exists costs a catalogue
    look-up and no lock on its table."""
    wanted = sorted(set(partitions))
    if not wanted:
        return []
    missing = await _missing(conn, wanted)
    if not missing:
        return []
    created = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ARCHIVE_LOCK,))
        for partition in await _missing(conn, missing):  # another replica may have made them
            await conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition.name),
                    sql.Identifier(partition.table),
                    sql.Literal(partition.start.isoformat()),
                    sql.Literal(partition.end.isoformat()),
                )
            )
            created.append(partition.name)
    return created


async def list_partitions(conn: Connection, table: str) -> list[Partition]:
    """The day partitions of `table`, oldest first (tables attached by hand under other names
    are not ours and are left out)."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        (table,),
    )
    found = [parse_partition(name) for (name,) in await cursor.fetchall()]
    return sorted(p for p in found if p is not None and p.table == table)


async def _missing(conn: Connection, partitions: Sequence[Partition]) -> list[Partition]:
    cursor = await conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS wanted(name) WHERE to_regclass(name) IS NULL",
        ([partition.name for partition in partitions],),
    )
    absent = {name for (name,) in await cursor.fetchall()}
    return [partition for partition in partitions if partition.name in absent]
