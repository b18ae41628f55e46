"""Newest-first pages of a stream's entries, with opaque cursors (SPEC §16).

A cursor is the base64url of the stream id a page ended at; the next page is what comes
before it. Stream ids only grow, so entries that arrive while a client pages are above every
cursor it holds: each entry is seen exactly once, and the new ones on a fresh first page.

With an archive the stream in Redis is a suffix, by id, of everything written (see
`sidecar.archive.reader`): the walk reads Redis down to its oldest entry and then the archive
below it. One page reads at most `SCAN_BUDGET` entries, whatever the filters: a filter that
matches little answers fewer items and a cursor to go on from, instead of scanning 90 days.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sidecar.archive import reader
from sidecar.archive.database import Connection
from sidecar.archive.reader import CLOCK_SKEW, Entry, StreamId
from sidecar.archive.tables import ArchivedStream
from sidecar.audit.entries import Decrypt, MalformedEntry, decode_entry, entry_moment
from sidecar.storage.client import RedisClient

CHUNK = 200
SCAN_BUDGET = 5_000
_ID_MAX = 2**63 - 1

Keep = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Window:
    """What a page is cut from: the cursor's position and the `since`/`until` bounds (on the
    document's own `ts`; None is unbounded)."""

    before: StreamId | None
    since: datetime | None
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    """Up to `limit` documents, newest first, and where the next page starts (None: done)."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def to_json(self) -> dict[str, object]:
        """The list answer of SPEC §16."""
        return {"items": self.items, "next_cursor": self.next_cursor}


def encode_cursor(stream_id: StreamId) -> str:
    """The opaque cursor for a page that ended at `stream_id`."""
    raw = reader.format_id(stream_id)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> StreamId:
    """The position in a cursor this API gave; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        ms, seq = raw.split(b"-")
        if not (ms.isdigit() and seq.isdigit()) or len(raw) > 41:
            raise ValueError
        position = int(ms), int(seq)
        # A forged one beyond what Redis ids and the archive's bigints hold, or 0-0 (nothing
        # lies below it), made Redis or PostgreSQL fail: a 500 instead of this 400.
        if position == (0, 0) or max(position) > _ID_MAX:
            raise ValueError
        return position
    except (ValueError, binascii.Error):
        raise ValueError("not a cursor this API gave (use next_cursor as it came)") from None


async def newest_first(
    redis: RedisClient,
    conn: Connection | None,
    source: ArchivedStream,
    before: StreamId | None,
) -> AsyncIterator[Entry]:
    """The stream's entries with ids below `before` (all, when None), newest first: Redis's,
    then, with an archive, the archive's below the oldest Redis holds."""
    position = before
    while True:
        top = "+" if position is None else "(" + reader.format_id(position).decode()
        entries: Any = await redis.xrevrange(source.stream, max=top, count=CHUNK)
        for entry in entries:
            yield entry
        if entries:
            position = reader.parse_id(entries[-1][0])
        if len(entries) < CHUNK:
            break
    if conn is None:
        return
    while True:
        rows = await reader.archive_tail(conn, source, CHUNK, before=position)
        for entry in reversed(rows):
            yield entry
        if len(rows) < CHUNK:
            return
        position = reader.parse_id(rows[0][0])


async def read_page(
    entries: AsyncIterator[Entry],
    field: str,
    window: Window,
    limit: int,
    keep: Keep,
    decrypt: Decrypt | None,
) -> Page:
    """The first `limit` documents of `entries` (newest first) inside `window` that `keep`
    takes. An entry that cannot be read is left out (the CLI's readers warn about it)."""
    floor = None if window.since is None else _stream_ms(window.since - CLOCK_SKEW)
    items: list[dict[str, Any]] = []
    scanned = 0
    async for entry_id, fields in entries:
        position = reader.parse_id(entry_id)
        if floor is not None and position[0] < floor:
            return Page(items, None)  # below every id a record of `since` on can have
        scanned += 1
        try:
            document = decode_entry(fields, field, decrypt)
        except MalformedEntry:
            document = None
        if document is not None and _inside(entry_id, document, window) and keep(document):
            items.append(document)
            if len(items) == limit:
                return Page(items, encode_cursor(position))
        if scanned >= SCAN_BUDGET:
            return Page(items, encode_cursor(position))
    return Page(items, None)


def start_before(window: Window) -> StreamId | None:
    """Where the walk starts: the cursor, else just above the last id a record up to `until`
    can have."""
    if window.before is not None or window.until is None:
        return window.before
    return (_stream_ms(window.until + CLOCK_SKEW) + 1, 0)


def _inside(entry_id: bytes, document: dict[str, Any], window: Window) -> bool:
    when = entry_moment(entry_id, document)
    if window.since is not None and when < window.since:
        return False
    return window.until is None or when <= window.until


def _stream_ms(when: datetime) -> int:
    return max(0, int(when.timestamp() * 1000))
