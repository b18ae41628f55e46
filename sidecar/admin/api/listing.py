"""What the three stream lists share (events, audit, admin events): the archive connection
when `archive.url` is set, the `since`/`until`/`limit`/`cursor` parameters, and one page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog

from sidecar.admin.endpoint import Param
from sidecar.admin.paging import (
    Keep,
    Page,
    Window,
    decode_cursor,
    newest_first,
    read_page,
    start_before,
)
from sidecar.admin.params import DEFAULT_LIMIT, MAX_LIMIT, parse_limit, parse_moment
from sidecar.archive.database import ArchiveUnavailable, Connection, connect, database_errors
from sidecar.archive.tables import ArchivedStream, archived_streams
from sidecar.audit.entries import Decrypt
from sidecar.errors import Unavailable

if TYPE_CHECKING:
    from sidecar.admin.context import AdminContext

log = structlog.get_logger("sidecar.admin")

_MOMENT = {"type": "string", "examples": ["30m", "24h", "7d", "2027-01-31T00:00:00Z"]}
PAGING = (
    Param(
        "since",
        _MOMENT,
        "entries at or after: a duration back (30m, 24h, 7d) or an RFC 3339 time",
        parse_moment,
    ),
    Param("until", _MOMENT, "entries at or before: as `since`", parse_moment),
    Param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "how many items, at most",
        parse_limit,
    ),
    Param("cursor", {"type": "string"}, "the `next_cursor` of the previous page", decode_cursor),
)


@asynccontextmanager
async def archive(context: AdminContext) -> AsyncIterator[Connection | None]:
    """A connection to the archive when one is configured and answers, else None: while
    PostgreSQL is down the newest entries still wait in Redis, and an operator looking into
    the outage still reads them (as `sidecar audit query` does)."""
    if context.archive_url is None:
        yield None
        return
    try:
        conn = await connect(context.archive_url, context.settings.archive.timeout_s)
    except ArchiveUnavailable as exc:
        log.warning("admin_archive_unreachable", reason=exc.reason)
        yield None
        return
    try:
        yield conn
    finally:
        await conn.close()


async def page(
    context: AdminContext,
    source: ArchivedStream,
    values: dict[str, Any],
    keep: Keep,
    decrypt: Decrypt | None,
) -> Page:
    """One page of `source`, newest first, under the paging parameters in `values`."""
    window = Window(before=values["cursor"], since=values["since"], until=values["until"])
    limit = values["limit"] or DEFAULT_LIMIT
    async with archive(context) as conn:
        entries = newest_first(context.redis, conn, source, start_before(window))
        try:
            with database_errors():
                return await read_page(entries, source.field, window, limit, keep, decrypt)
        except ArchiveUnavailable as exc:  # it failed mid-read: a retry may find it back
            raise Unavailable(
                f"the archive failed mid-read ({exc.reason})", retry_after=1
            ) from None


def source_of(context: AdminContext, stream: str) -> ArchivedStream:
    """The archived stream named `stream` (its field and table)."""
    return next(s for s in archived_streams(context.settings) if s.stream == stream)
