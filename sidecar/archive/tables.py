"""Pure: which stream goes into which table, and each table's columns in the order the
archiver inserts them (`schema` creates the same columns, `rows` fills them).

The three record tables share the stream id, the request id and the chain (SPEC §17) and add
the metadata a query filters on; the document itself is kept as the stream held it, so what is
encrypted in Redis stays encrypted in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

# Re-exported: the archive named the stream before the admin API existed.
from sidecar.audit.admin_actions import ADMIN_EVENTS_STREAM as ADMIN_EVENTS_STREAM
from sidecar.config import Settings

# Partitions exist this many days past today, so a record whose ts is up to that far ahead (a
# fast clock) still has one; also the latest ts the archive takes.
AHEAD_DAYS = 3
DEAD_LETTER_SUFFIX = ":dead-letter"
# The counters' outcome for an audit record: it passed authentication (or needed none). An
# event's outcome is its name (`invalid_key`, `rate_limited`, …).
ALLOWED = "allowed"


@dataclass(frozen=True, slots=True)
class Column:
    """A column the archiver fills, with the PostgreSQL type its array parameter is cast to."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Table:
    """A record table: its columns in insert order and, when its rows are counted in
    `activity_minutes`, the SQL expression of a row's outcome."""

    name: str
    columns: tuple[Column, ...]
    outcome: str | None

    @property
    def column_names(self) -> tuple[str, ...]:
        """The names of `columns`, in order."""
        return tuple(column.name for column in self.columns)


_HEAD = (
    Column("ts", "timestamptz"),
    Column("stream_ms", "bigint"),
    Column("stream_seq", "bigint"),
    Column("request_id", "text"),
    Column("writer", "text"),
    Column("seq", "bigint"),
    Column("prev", "text"),
    Column("mac", "text"),
)
_DOCUMENT = (Column("document", "text"),)

AUDIT_RECORDS = Table(
    "audit_records",
    (
        *_HEAD,
        Column("method", "text"),
        Column("status", "integer"),
        Column("key_id", "text"),
        Column("key_name", "text"),
        Column("client_ip", "text"),
        Column("duration_ms", "double precision"),
        Column("request_bytes", "bigint"),
        Column("response_bytes", "bigint"),
        *_DOCUMENT,
    ),
    outcome=f"'{ALLOWED}'",
)
AUTH_EVENTS = Table(
    "auth_events",
    (
        *_HEAD,
        Column("event", "text"),
        Column("key_id", "text"),
        Column("key_name", "text"),
        Column("client_ip", "text"),
        *_DOCUMENT,
    ),
    outcome="event",
)
ADMIN_EVENTS = Table(
    "admin_events",
    (
        *_HEAD,
        Column("action", "text"),
        Column("actor_key_id", "text"),
        Column("actor_key_name", "text"),
        *_DOCUMENT,
    ),
    outcome=None,  # what operators did is not traffic: it is not counted
)
RECORD_TABLES = (AUDIT_RECORDS, AUTH_EVENTS, ADMIN_EVENTS)
ACTIVITY_MINUTES = "activity_minutes"
# Every table partitioned by day, the counters included.
PARTITIONED = (*(table.name for table in RECORD_TABLES), ACTIVITY_MINUTES)


@dataclass(frozen=True, slots=True)
class ArchivedStream:
    """One stream the archiver copies: the entry field holding the document, and its table.

    `create`: the archiver creates the stream (with its consumer group) when it is missing;
    otherwise it waits for the stream's writer to create it (the admin events, which arrive
    with the admin API)."""

    stream: str
    field: str
    table: Table
    create: bool = True

    @property
    def dead_letter(self) -> str:
        """Where this stream's poison entries are parked, with the reason."""
        return self.stream + DEAD_LETTER_SUFFIX


def archived_streams(settings: Settings) -> tuple[ArchivedStream, ...]:
    """The streams a sidecar with these settings archives: the audit records, the
    authentication events and, once it exists, the admin events."""
    return (
        ArchivedStream(settings.audit.stream, "record", AUDIT_RECORDS),
        ArchivedStream(settings.audit.events_stream, "event", AUTH_EVENTS),
        ArchivedStream(ADMIN_EVENTS_STREAM, "event", ADMIN_EVENTS, create=False),
    )
