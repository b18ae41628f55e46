"""The archive's tables, and `migrate`, which brings a database up to them.

The record tables and the activity counters are partitioned by range of `ts`, one partition
per UTC day (`partitions`), so retention drops whole days instead of deleting rows. Each record
table's primary key leads with `ts` (the partition key must be part of it) and ends with the
Redis stream id, the identity of an entry: a batch inserted twice (a retry, or two replicas
racing for the same pending entries) conflicts on it and inserts nothing the second time. The
key's `ts` prefix also serves the queries by time, so no index on `ts` alone is needed.

Migrations are numbered steps applied in order and recorded in `sidecar_schema_version`; each
runs under the archive's advisory lock in one transaction, so replicas starting together run
each step once, the others wait and find it done.
"""

from __future__ import annotations

import structlog

from sidecar.archive.database import Connection, database_errors
from sidecar.archive.partitions import ARCHIVE_LOCK, create_partitions, days_around, every_table

log = structlog.get_logger("sidecar.archive.schema")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS sidecar_schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

_CHAIN = """
    ts timestamptz NOT NULL,            -- the record's own time (the request's)
    stream_ms bigint NOT NULL,          -- the Redis stream id, ms-seq
    stream_seq bigint NOT NULL,
    request_id text {request_id},
    writer text,                        -- the tamper evidence, SPEC §17
    seq bigint,
    prev text,
    mac text,"""
_TAIL = """
    document text NOT NULL,             -- the stream field's bytes; encrypted fields stay so
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, stream_ms, stream_seq)
) PARTITION BY RANGE (ts)"""

_V1 = (
    "CREATE TABLE audit_records ("
    + _CHAIN.format(request_id="NOT NULL")
    + """
    method text,
    status integer,
    key_id text,
    key_name text,
    client_ip text,
    duration_ms double precision,
    request_bytes bigint,
    response_bytes bigint,"""
    + _TAIL,
    "CREATE INDEX audit_records_key_id_ts ON audit_records (key_id, ts)",
    "CREATE INDEX audit_records_status_ts ON audit_records (status, ts)",
    "CREATE INDEX audit_records_request_id ON audit_records (request_id)",
    "CREATE TABLE auth_events ("
    + _CHAIN.format(request_id="NOT NULL")
    + """
    event text NOT NULL,
    key_id text,
    key_name text,
    client_ip text,"""
    + _TAIL,
    "CREATE INDEX auth_events_event_ts ON auth_events (event, ts)",
    "CREATE INDEX auth_events_key_id_ts ON auth_events (key_id, ts)",
    "CREATE TABLE admin_events ("
    + _CHAIN.format(request_id="")  # an operator's action need not come from a request
    + """
    action text,
    actor_key_id text,
    actor_key_name text,"""
    + _TAIL,
    "CREATE INDEX admin_events_action_ts ON admin_events (action, ts)",
    """CREATE TABLE activity_minutes (
    ts timestamptz NOT NULL,            -- the minute
    key_id text NOT NULL,               -- '' for requests without a key
    outcome text NOT NULL,              -- 'allowed' (an audit record) or the event's name
    count bigint NOT NULL,
    PRIMARY KEY (ts, key_id, outcome)
) PARTITION BY RANGE (ts)""",
    "CREATE INDEX activity_minutes_key_id_ts ON activity_minutes (key_id, ts)",
    """CREATE TABLE chain_checkpoints (
    stream text NOT NULL,
    writer text NOT NULL,
    seq bigint NOT NULL,                -- the writer's last record in the dropped days …
    digest text NOT NULL,               -- … and its digest, what the next record's prev holds
    mac text,                           -- `checkpoints.checkpoint_text`'s HMAC, when keyed
    cut_at timestamptz NOT NULL,
    PRIMARY KEY (stream, writer)
)""",
)

# One entry per schema version, in order: the statements that make it from the one before.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


async def schema_version(conn: Connection) -> int:
    """The version the database is at; 0 when it has never been migrated."""
    with database_errors():
        cursor = await conn.execute("SELECT to_regclass('sidecar_schema_version') IS NOT NULL")
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return 0
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM sidecar_schema_version")
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(conn: Connection) -> int:
    """Bring the database to `SCHEMA_VERSION` and make the partitions of yesterday to three
    days ahead (by the database's clock); the version it is at afterwards.

    Idempotent and safe to run from several processes at once: each step runs in one
    transaction under the archive lock, after checking it is still needed. A database at a
    newer version (a rolled-back deploy) is left as it is."""
    with database_errors():
        for version, statements in enumerate(MIGRATIONS, start=1):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ARCHIVE_LOCK,))
                await conn.execute(_VERSION_TABLE)
                if await schema_version(conn) >= version:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO sidecar_schema_version (version) VALUES (%s)", (version,)
                )
                log.info("archive schema migrated", version=version)
        cursor = await conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date")
        row = await cursor.fetchone()
        assert row is not None
        await create_partitions(conn, every_table(days_around(row[0])))
        reached = await schema_version(conn)
    if reached > SCHEMA_VERSION:
        log.warning(
            "the archive's schema is newer than this sidecar's",
            database=reached,
            sidecar=SCHEMA_VERSION,
        )
    return reached
