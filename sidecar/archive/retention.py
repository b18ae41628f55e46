"""Retention in the archive: whole day partitions older than `audit.retention_days` are
dropped, never rows deleted, and each writer's chain is checkpointed first (`checkpoints`).

"Older" is by the database's clock: a day goes once it is entirely older than the retention
(its end is at or before `now() - retention_days`). The checkpoints and the drops run in one
transaction under the archive lock, so a replica that crashes half way leaves both undone, and
two replicas never drop the same day at once. A checkpoint only moves forward: one a later day
already set is not replaced by an earlier one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from psycopg import sql

from sidecar.archive.checkpoints import ChainCheckpoint, sign_checkpoint
from sidecar.archive.database import Connection, database_errors
from sidecar.archive.partitions import ARCHIVE_LOCK, Partition, list_partitions
from sidecar.archive.tables import ACTIVITY_MINUTES, ArchivedStream
from sidecar.audit.integrity import IntegrityError, IntegrityKeys, check

log = structlog.get_logger("sidecar.archive.retention")


_UPSERT_CHECKPOINT = """
INSERT INTO chain_checkpoints (stream, writer, seq, digest, mac, cut_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (stream, writer) DO UPDATE
SET seq = EXCLUDED.seq, digest = EXCLUDED.digest, mac = EXCLUDED.mac, cut_at = EXCLUDED.cut_at
WHERE chain_checkpoints.seq < EXCLUDED.seq"""


def expired(partitions: Sequence[Partition], now: datetime, days: int) -> list[Partition]:
    """Those of `partitions` entirely older than `days` before `now`."""
    cutoff = now - timedelta(days=days)
    return [partition for partition in partitions if partition.end <= cutoff]


async def drop_expired(
    conn: Connection,
    streams: Sequence[ArchivedStream],
    days: int,
    integrity: IntegrityKeys | None,
) -> list[str]:
    """Checkpoint the chains in, then drop, every day partition entirely older than `days` by
    the database's clock (the counters' too); the names dropped, oldest first per table."""
    if days < 1:
        log.error("archive retention refused: retention_days below 1", days=days)
        return []
    dropped: list[str] = []
    with database_errors():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ARCHIVE_LOCK,))
            # A day's partition is scanned for its writers' last records: far longer than an
            # insert may take, so the pass lifts the statement timeout for its transaction.
            await conn.execute("SET LOCAL statement_timeout = '15min'")
            cursor = await conn.execute("SELECT now()")
            row = await cursor.fetchone()
            assert row is not None
            now: datetime = row[0]
            for stream in streams:
                old = expired(await list_partitions(conn, stream.table.name), now, days)
                if old:
                    await _checkpoint(conn, stream, old, now, integrity)
                    dropped += await _drop(conn, old)
            dropped += await _drop(
                conn, expired(await list_partitions(conn, ACTIVITY_MINUTES), now, days)
            )
    if dropped:
        log.info("archive partitions dropped", partitions=dropped, retention_days=days)
    return dropped


async def _checkpoint(
    conn: Connection,
    stream: ArchivedStream,
    partitions: Sequence[Partition],
    now: datetime,
    integrity: IntegrityKeys | None,
) -> None:
    """Record the last (seq, digest) of each writer in `partitions` as its checkpoint."""
    lasts: dict[str, tuple[int, str]] = {}
    unchecked = 0
    for partition in partitions:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT DISTINCT ON (writer) writer, seq, document FROM {} "
                "WHERE writer IS NOT NULL AND seq IS NOT NULL ORDER BY writer, seq DESC"
            ).format(sql.Identifier(partition.name))
        )
        for writer, seq, document in await cursor.fetchall():
            if writer in lasts and lasts[writer][0] >= seq:
                continue
            try:
                link = check(stream.stream, document.encode("utf-8"), integrity)
            except IntegrityError:
                unchecked += 1  # forged or altered: nothing a checkpoint may vouch for
                continue
            lasts[writer] = (link.seq, link.digest)
    if unchecked:
        log.warning(
            "archive retention drops records that fail the integrity check, without a checkpoint",
            stream=stream.stream,
            writers=unchecked,
        )
    for writer, (seq, digest) in sorted(lasts.items()):
        checkpoint = ChainCheckpoint(stream.stream, writer, seq, digest, now)
        await conn.execute(
            _UPSERT_CHECKPOINT,
            (stream.stream, writer, seq, digest, sign_checkpoint(checkpoint, integrity), now),
        )


async def _drop(conn: Connection, partitions: Sequence[Partition]) -> list[str]:
    for partition in partitions:
        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition.name)))
    return [partition.name for partition in partitions]
