"""`sidecar archive migrate` and `sidecar archive status [--json]` (SPEC §15).

`migrate` brings the database named by `archive.url` to this release's schema (serve does the
same at start-up; several at once are safe). `status` shows, per stream, how far the archiver is
behind (lag, pending entries, entries still in Redis), and per table its day partitions with
their rows and bytes. Both are usage errors (exit 2) without `archive.url`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sidecar.archive.database import ArchiveUnavailable, Connection, connect, database_errors
from sidecar.archive.schema import SCHEMA_VERSION, migrate, schema_version
from sidecar.archive.tables import ArchivedStream, archived_streams
from sidecar.archive.window import position
from sidecar.config import Settings
from sidecar.config.url_credentials import mask_url_credentials
from sidecar.errors import SidecarError, UsageError
from sidecar.storage.client import create_redis, unreachable
from sidecar.storage.failures import REDIS_FAILURES

# rows: an estimate, never a count(*) (that would read 90 days of records): the live-row
# statistics PostgreSQL keeps as rows are inserted (exact for these insert-only tables once a
# session has flushed them, within seconds), or the planner's count where that is higher (the
# statistics restart from zero after a crash; the planner's survives it).
_PARTITIONS = """
SELECT child.relname, pg_total_relation_size(child.oid),
       greatest(child.reltuples::bigint, pg_stat_get_live_tuples(child.oid))
FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid
WHERE pg_inherits.inhparent = to_regclass(%s)
ORDER BY child.relname"""


@asynccontextmanager
async def open_archive(settings: Settings, *, reading: bool = False) -> AsyncIterator[Connection]:
    """A connection to `archive.url`, closed on the way out; `UsageError` when it is unset and
    `SidecarError` naming the URL (password masked) when PostgreSQL does not answer.

    `reading`: no statement timeout. `archive.timeout_s` bounds the archiver's inserts; a
    query over 90 days may rightly take longer, and the operator can end it with Ctrl-C."""
    url = settings.archive.url
    if url is None:
        raise UsageError("archive.url is not set (or SIDECAR_ARCHIVE__URL): no archive to use")
    try:
        conn = await connect(url, settings.archive.timeout_s)
    except ArchiveUnavailable as exc:
        raise archive_unreachable(settings, exc.reason) from None
    try:
        if reading:
            with database_errors():
                await conn.execute("SET statement_timeout = 0")
        yield conn
    except ArchiveUnavailable as exc:
        raise archive_unreachable(settings, exc.reason) from None
    finally:
        await conn.close()


class ArchiveUnreachable(SidecarError):
    """A command could not use the archive (exit 1)."""


def archive_unreachable(settings: Settings, reason: str) -> ArchiveUnreachable:
    """The error a command reports when the archive fails it: the URL without its password,
    and the class of the failure (never a value: one could be request content)."""
    url = mask_url_credentials(settings.archive.url or "")
    return ArchiveUnreachable(f"cannot reach the archive at {url} ({reason})")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `archive <action>`; exit status 0."""
    async with open_archive(settings) as conn:
        if args.action == "migrate":
            version = await migrate(conn)
            print(json.dumps({"schema_version": version}) if args.json else _migrated(version))
            return 0
        status = await _status(conn, settings)
    print(json.dumps(status) if args.json else "\n".join(_status_lines(status)))
    return 0


def _migrated(version: int) -> str:
    newer = " (newer than this sidecar's; left as it is)" if version > SCHEMA_VERSION else ""
    return f"archive schema at version {version}{newer}"


@dataclass(frozen=True, slots=True)
class _StreamStatus:
    stream: str
    table: str
    lag_s: float
    pending: int
    redis_entries: int


async def _status(conn: Connection, settings: Settings) -> dict[str, Any]:
    assert settings.archive.url is not None
    streams = archived_streams(settings)
    tables = []
    with database_errors():
        version = await schema_version(conn)
        for archived in streams:
            cursor = await conn.execute(_PARTITIONS, (archived.table.name,))
            partitions = [
                {"partition": name, "rows": max(0, int(rows)), "bytes": int(size)}
                for name, size, rows in await cursor.fetchall()
            ]
            tables.append(
                {
                    "table": archived.table.name,
                    "partitions": partitions,
                    "rows": sum(p["rows"] for p in partitions),
                    "bytes": sum(p["bytes"] for p in partitions),
                }
            )
    return {
        "archive": mask_url_credentials(settings.archive.url),
        "schema_version": version,
        "streams": [asdict(s) for s in await _stream_statuses(settings, streams)],
        "tables": tables,
        "rows": sum(t["rows"] for t in tables),
        "bytes": sum(t["bytes"] for t in tables),
    }


async def _stream_statuses(
    settings: Settings, streams: Sequence[ArchivedStream]
) -> list[_StreamStatus]:
    redis = create_redis(settings.redis)
    try:
        found = []
        for archived in streams:
            # The archiver's own reading, trimming nothing: what its lag gauge would say.
            at = await position(redis, archived.stream)
            found.append(
                _StreamStatus(archived.stream, archived.table.name, at.lag_s, at.pending, at.length)
            )
        return found
    except REDIS_FAILURES as exc:
        raise unreachable(settings.redis.url, exc) from None
    finally:
        await redis.aclose()


def _status_lines(status: dict[str, Any]) -> list[str]:
    lines = [f"archive {status['archive']}  schema version {status['schema_version']}"]
    if status["schema_version"] == 0:
        lines.append("  not migrated yet: run `sidecar archive migrate` (serve does it too)")
    lines += ["", f"{'stream':<24} {'table':<15} {'lag s':>8} {'pending':>8} {'in Redis':>9}"]
    for s in status["streams"]:
        lines.append(
            f"{s['stream']:<24} {s['table']:<15} {s['lag_s']:>8.1f} {s['pending']:>8} "
            f"{s['redis_entries']:>9}"
        )
    lines += ["", f"{'partition':<32} {'rows (est.)':>12} {'bytes':>14}"]
    for table in status["tables"]:
        for p in table["partitions"]:
            lines.append(f"{p['partition']:<32} {p['rows']:>12} {p['bytes']:>14}")
        lines.append(
            f"{table['table'] + ' (all days)':<32} {table['rows']:>12} {table['bytes']:>14}"
        )
    lines.append(f"{'total':<32} {status['rows']:>12} {status['bytes']:>14}")
    return lines
