"""`sidecar audit tail|query`, `sidecar events tail` and `sidecar admin-events tail`: read
the streams, decrypted; an entry that cannot be read is skipped with a warning naming it, and
the rest are still shown.

With `archive.url` set, the entries come from the archive and the Redis window together
(`sidecar.archive.reader`): the filters the archive has columns for run in SQL, and every entry,
from either source, then passes the same test here (the path only here: it may be encrypted).
`--follow` goes on from Redis, where new entries arrive."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import psycopg

from sidecar.archive import reader
from sidecar.archive.database import Connection
from sidecar.archive.reader import CLOCK_SKEW, Entry, RowFilter
from sidecar.archive.tables import ArchivedStream, archived_streams
from sidecar.audit.admin_actions import ADMIN_EVENT_FIELD, ADMIN_EVENTS_STREAM
from sidecar.audit.crypto import BodyCipher
from sidecar.audit.entries import Decrypt, MalformedEntry, decode_entry, entry_moment, parse_status
from sidecar.audit.events import EVENT_FIELD
from sidecar.audit.trail import RECORD_FIELD
from sidecar.cli import verify as cli_verify
from sidecar.cli.archive import ArchiveUnreachable, archive_unreachable, open_archive
from sidecar.cli.reading_args import MAX_COUNT, MAX_SINCE
from sidecar.cli.terminal import json_line, printable
from sidecar.config import Settings
from sidecar.durations import parse_duration
from sidecar.errors import UsageError
from sidecar.proxy.routes import compile_glob
from sidecar.storage.client import RedisClient, create_redis, unreachable
from sidecar.storage.failures import REDIS_FAILURES

_PAGE = 500
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Keep = Callable[[bytes, dict[str, Any]], bool]


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the entries the arguments ask for, skipping (with a warning on stderr) any that
    cannot be read; exit status 0, `RedisUnreachable` when Redis fails."""
    if args.command == "audit" and args.action == "verify":
        return await cli_verify.run(args, settings)
    is_audit = args.command == "audit"
    stream = settings.audit.stream if is_audit else settings.audit.events_stream
    field = RECORD_FIELD if is_audit else EVENT_FIELD
    decrypt: Decrypt | None = None
    if settings.audit.encryption_key_file is not None:
        cipher = BodyCipher.from_file(settings.audit.encryption_key_file)
        decrypt = cipher.decrypt_record if is_audit else cipher.decrypt_event
    render = _render_record if is_audit else _render_event
    if args.command == "admin-events":  # never encrypted: names and ids only, no content
        stream, field, decrypt, render = ADMIN_EVENTS_STREAM, ADMIN_EVENT_FIELD, None, _render_admin
    follow = args.action == "tail" and args.follow
    stop = asyncio.Event()
    keep: Keep = lambda _entry_id, _document: True  # noqa: E731
    source = next(s for s in archived_streams(settings) if s.stream == stream)
    redis = create_redis(settings.redis)
    stack = AsyncExitStack()
    try:
        conn = await _archive(stack, settings)
        if args.action == "query":
            rows, keep = _query_filter(args)
            entries = _query(conn, redis, source, rows)
        else:
            if not 1 <= args.count <= MAX_COUNT:
                raise UsageError(f"-n: must be from 1 to {MAX_COUNT}")
            # XREAD BLOCK must come back before the client's own timeout (redis.timeout_s)
            # would end the wait as an error; an empty answer just means "nothing new yet".
            block_ms = max(1, int(settings.redis.timeout_s * 1000) // 2)
            if follow:
                _stop_on_signals(stop)
            newest = await _newest(conn, redis, source, args.count)
            entries = _tail(redis, stream, newest, follow=follow, block_ms=block_ms, stop=stop)
        count = 0
        async for entry_id, fields in entries:
            try:
                document = decode_entry(fields, field, decrypt)
            except MalformedEntry as exc:
                # One bad entry (garbage, a foreign key, a tampered token) must not hide the
                # rest: say which and why on stderr, where --json output is not disturbed.
                warning = f"skipped {stream} entry {entry_id.decode(errors='replace')}: {exc}"
                print(f"sidecar: warning: {printable(warning)}", file=sys.stderr)
                continue
            if not keep(entry_id, document):
                continue
            line = json_line(document) if args.json else printable(render(document))
            # Followed output goes out line by line, even into a pipe (`| jq`, `| grep`).
            print(line, flush=follow)
            count += 1
        if count == 0 and not args.json:
            print(f"(no entries in {stream})")
        return 0
    except psycopg.Error as exc:  # the archive failed mid-read (psycopg wraps socket errors)
        raise archive_unreachable(settings, type(exc).__name__) from None
    except REDIS_FAILURES as exc:
        raise unreachable(settings.redis.url, exc) from None
    finally:
        if follow:
            _restore_signals()
        await stack.aclose()
        await redis.aclose()


async def _archive(stack: AsyncExitStack, settings: Settings) -> Connection | None:
    """A connection to the archive, if one is configured and answers. One that does not is
    a warning, not a failure: while PostgreSQL is down the newest records wait in Redis, and
    an operator looking into the outage still reads them."""
    if settings.archive.url is None:
        return None
    try:
        return await stack.enter_async_context(open_archive(settings, reading=True))
    except ArchiveUnreachable as exc:
        print(f"sidecar: warning: {exc}: reading Redis only", file=sys.stderr)
        return None


def _stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C (or SIGTERM) ends `--follow` cleanly: the loop sees `stop` between two reads.
    Cancelling the task instead is not reliable: on Python 3.11 a cancel landing inside
    redis-py's `wait_for` can be swallowed (gh-86296), and the command would go on."""
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)


def _restore_signals() -> None:
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.remove_signal_handler(signum)


async def _newest(
    conn: Connection | None, redis: RedisClient, source: ArchivedStream, count: int
) -> list[Entry]:
    """The last `count` entries, oldest first: of the archive and the window, else of Redis."""
    if conn is not None:
        return await reader.tail(conn, redis, source, count)
    entries: Any = await redis.xrevrange(source.stream, count=count)
    return list(reversed(entries))


async def _tail(
    redis: RedisClient,
    stream: str,
    newest: list[Entry],
    *,
    follow: bool,
    block_ms: int,
    stop: asyncio.Event,
) -> AsyncIterator[Entry]:
    # Not "$" for an empty stream: "$" means "after whatever is last when this XREAD runs",
    # so an entry added between two XREADs would never be shown. The stream was empty just
    # now, so everything in it from here on is new.
    last_id = newest[-1][0] if newest else b"0-0"
    for entry in newest:
        yield entry
    while follow and not stop.is_set():
        response: Any = await redis.xread({stream: last_id}, block=block_ms, count=_PAGE)
        for _stream, stream_entries in response:
            for entry in stream_entries:
                last_id = entry[0]
                yield entry


def _query(
    conn: Connection | None, redis: RedisClient, source: ArchivedStream, rows: RowFilter
) -> AsyncIterator[Entry]:
    """The entries that may pass `rows`: the Redis ones from CLOCK_SKEW before `since` by
    stream id on, merged with the archive's that pass it when there is one."""
    assert rows.since is not None
    # `--since` is about the request's own time (`ts`); a record reaches the stream later than
    # its ts (a spool replay) or, with a host clock ahead of Redis's, with an id before it.
    # Reading from CLOCK_SKEW before `since` by stream id finds the latter; `ts` decides.
    start = f"{max(0, int((rows.since - CLOCK_SKEW).timestamp() * 1000))}-0"
    if conn is None:
        return reader.window_range(redis, source.stream, start)
    return reader.read(conn, redis, source, rows, window_start=start)


def _query_filter(args: argparse.Namespace) -> tuple[RowFilter, Keep]:
    """(what the archive can filter on, a test of one record against every filter). UsageError
    for a bad value, before anything is read."""
    status = _status_range(args.status)
    matches = _filter(args, status)
    try:
        since = datetime.now(UTC) - parse_duration(args.since, at_most=MAX_SINCE)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None

    def keep(entry_id: bytes, document: dict[str, Any]) -> bool:
        return entry_moment(entry_id, document) >= since and matches(document)

    return RowFilter(since=since, key_name=args.key_name, status=status), keep


def _status_range(text: str | None) -> tuple[int, int] | None:
    """`--status` as an inclusive range of codes: 404 → (404, 404), 4xx → (400, 499)."""
    if text is None:
        return None
    try:
        return parse_status(text)
    except ValueError:
        raise UsageError("--status: use a code (404) or a class (4xx)") from None


def _filter(
    args: argparse.Namespace, status_range: tuple[int, int] | None
) -> Callable[[dict[str, Any]], bool]:
    low, high = status_range or (0, 0)
    path_pattern = compile_glob(args.path) if args.path else None

    def matches(document: dict[str, Any]) -> bool:
        if args.key_name is not None and document.get("key_name") != args.key_name:
            return False
        status = _section(document, "response").get("status")
        if status_range is not None and not (isinstance(status, int) and low <= status <= high):
            return False
        return path_pattern is None or bool(path_pattern.match(str(document.get("path", ""))))

    return matches


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    """`document[name]` when it is an object: a record of another shape is shown, not a crash."""
    value = document.get(name)
    return value if isinstance(value, dict) else {}


def _render_record(record: dict[str, Any]) -> str:
    response = _section(record, "response")
    path = str(record.get("path", ""))
    if record.get("query"):
        path += "?" + str(record["query"])
    return "  ".join(
        [
            str(record.get("ts", "")),
            str(response.get("status", "")),
            f"{record.get('method', ''):<6}",
            path,
            f"key={record.get('key_name') or '-'}",
            f"{record.get('duration_ms', '')}ms",
            f"id={record.get('request_id', '')}",
        ]
    )


def _render_event(event: dict[str, Any]) -> str:
    return "  ".join(
        [
            str(event.get("ts", "")),
            f"{event.get('event', ''):<17}",
            f"{event.get('method', ''):<6}",
            str(event.get("path", "")),
            f"client={event.get('client_ip', '')}",
            f"key={event.get('key_name') or event.get('key_id') or '-'}",
            str(event.get("detail", "")),
        ]
    )


def _render_admin(event: dict[str, Any]) -> str:
    actor = _section(event, "actor")
    return "  ".join(
        [
            str(event.get("ts", "")),
            f"{event.get('action', ''):<14}",
            f"by={actor.get('name') or '-'}",
            f"target={event.get('target') or '-'}",
            f"client={event.get('client_ip') or '-'}",
            f"id={event.get('request_id') or '-'}",
            str(event.get("detail", "")),
        ]
    )
