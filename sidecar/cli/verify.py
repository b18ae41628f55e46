"""`sidecar audit verify [--since DURATION]`: check both streams' tamper evidence (SPEC §17).

Each stream is read in pages, oldest first, through a `StreamVerifier`, with the retention
checkpoints and the writers' high-water marks read before the entries: a writer appends after
its mark is set, so every record a mark counts is in the stream by the time the walk gets there.
With `archive.url` set the walk is the archive's rows merged with the Redis window by stream id
(`sidecar.archive.reader`; the archive's copy where both hold one, so an edit to it is seen), and
the checkpoints of dropped partitions (`chain_checkpoints`) count with Redis's.
Exit status 0 when nothing is wrong, 1 on any finding, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, timedelta
from typing import Any

import psycopg

from sidecar.archive import reader
from sidecar.archive.checkpoints import ChainCheckpoint, checkpoint_signed
from sidecar.archive.database import Connection
from sidecar.archive.reader import Entry, RowFilter
from sidecar.archive.tables import ArchivedStream, archived_streams
from sidecar.audit.checkpoints import Checkpoint, checkpoints_key, decode_checkpoint
from sidecar.audit.content import EVENT_FIELDS, content_findings
from sidecar.audit.findings import StreamReport
from sidecar.audit.integrity import IntegrityError, IntegrityKeys
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.audit.retention import redis_now_ms
from sidecar.audit.verify import ContentCheck, StoredCheckpoint, StreamVerifier
from sidecar.cli.archive import archive_unreachable, open_archive
from sidecar.cli.reading_args import MAX_SINCE
from sidecar.cli.verify_output import print_reports
from sidecar.config import Settings
from sidecar.durations import parse_duration
from sidecar.errors import UsageError
from sidecar.storage.client import RedisClient, create_redis, unreachable
from sidecar.storage.failures import REDIS_FAILURES

PAGE = 1000
EXIT_OK, EXIT_FINDINGS = 0, 1
# A walk is repeated (this many times at most) when retention trimmed under it: its checkpoints,
# read before, may not cover what the trim removed ahead of the walk.
_ATTEMPTS = 3
_GLOB_SPECIAL = str.maketrans({char: "\\" + char for char in "*?[]\\"})
# A partition drop cuts by day, not by stream id: every record left counts as after the cut.
_ARCHIVE_CUT_MINID = "0-0"
NO_KEY_WARNING = (
    "no integrity key (audit.integrity_key_file or audit.encryption_key_file): "
    "chain only: forged records cannot be told from real ones"
)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Verify both streams, print the findings; 0 when clean, 1 on any finding."""
    since: timedelta | None = None
    if args.since is not None:
        try:
            since = parse_duration(args.since, at_most=MAX_SINCE)
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    keys = load_audit_keys(settings).integrity
    if keys is None:
        print(f"sidecar: warning: {NO_KEY_WARNING}", file=sys.stderr)
    encrypted = settings.audit.encryption_key_file is not None
    sources = {source.stream: source for source in archived_streams(settings)}
    streams = [
        (sources[settings.audit.stream], _cleartext_record if encrypted else None),
        (sources[settings.audit.events_stream], _cleartext_event if encrypted else None),
    ]
    redis = create_redis(settings.redis)
    async with AsyncExitStack() as stack:
        conn = None
        if settings.archive.url is not None:
            conn = await stack.enter_async_context(open_archive(settings, reading=True))
        try:
            reports = [
                await verify_stream(redis, source, keys, since=since, content=content, conn=conn)
                for source, content in streams
            ]
        except psycopg.Error as exc:  # the archive failed mid-walk (psycopg wraps socket errors)
            raise archive_unreachable(settings, type(exc).__name__) from None
        except REDIS_FAILURES as exc:
            raise unreachable(settings.redis.url, exc) from None
        finally:
            await redis.aclose()
    print_reports(reports, as_json=args.json, keyed=keys is not None, since=args.since)
    return EXIT_FINDINGS if any(report.findings for report in reports) else EXIT_OK


async def verify_stream(
    redis: RedisClient,
    source: ArchivedStream,
    keys: IntegrityKeys | None,
    *,
    since: timedelta | None = None,
    content: ContentCheck | None = None,
    conn: Connection | None = None,
) -> StreamReport:
    """Walk `source`'s stream (and its archive table, given `conn`) and report its findings."""
    stream = source.stream
    start_ms = 0
    if since is not None:
        start_ms = max(0, await redis_now_ms(redis, stream) - int(since.total_seconds() * 1000))
    for attempt in range(_ATTEMPTS):
        cuts = await _cuts(redis, conn, stream)
        first = await _first_id(redis, stream)
        verifier = StreamVerifier(
            stream,
            keys,
            checkpoints=_checkpoints(stream, cuts, keys),
            marks=await _marks(redis, stream),
            since=since is not None,
            content=content,
        )
        field = source.field.encode()
        async for entry_id, fields in _walk(redis, conn, source, start_ms):
            verifier.feed(entry_id.decode(), fields.get(field))
        report = verifier.finish()
        # Retention trimmed under the walk: its checkpoints, read before, may not cover what
        # went ahead of it. With an archive, the archiver may have archived and trimmed entries
        # after the walk's snapshot of the table and before its read of them in Redis.
        trimmed = bool(conn and report.findings) and await _first_id(redis, stream) != first
        if attempt + 1 == _ATTEMPTS or (await _cuts(redis, conn, stream) == cuts and not trimmed):
            break
    return report


def _walk(
    redis: RedisClient, conn: Connection | None, source: ArchivedStream, start_ms: int
) -> AsyncIterator[Entry]:
    """The stream's entries from `start_ms` on: Redis's, merged with the archive's if any."""
    if conn is None:
        return reader.window_range(redis, source.stream, f"{start_ms}-0")
    rows = RowFilter(from_id=(start_ms, 0)) if start_ms else RowFilter()
    return reader.read(conn, redis, source, rows, window_start=f"{start_ms}-0")


async def _first_id(redis: RedisClient, stream: str) -> bytes | None:
    first: Any = await redis.xrange(stream, count=1)
    return first[0][0] if first else None


_Cuts = tuple[dict[str, bytes], list[tuple[ChainCheckpoint, str | None]]]


async def _cuts(redis: RedisClient, conn: Connection | None, stream: str) -> _Cuts:
    """The checkpoints as stored: Redis's retention's, and the archive's partition drops'."""
    stored: Any = await redis.hgetall(checkpoints_key(stream))
    in_redis = {writer.decode(errors="replace"): value for writer, value in stored.items()}
    in_archive = [] if conn is None else await reader.archive_checkpoints(conn, stream)
    return in_redis, in_archive


def _checkpoints(
    stream: str, cuts: _Cuts, keys: IntegrityKeys | None
) -> dict[str, StoredCheckpoint]:
    """Each writer's latest checkpoint: Redis's (from before the archive, when retention still
    trimmed the stream) unless a partition drop cut the chain later."""
    in_redis, in_archive = cuts
    found: dict[str, StoredCheckpoint] = dict(in_redis)
    for cut, mac in in_archive:
        earlier = found.get(cut.writer)
        if isinstance(earlier, bytes) and _seq_of(stream, cut.writer, earlier) > cut.seq:
            continue
        found[cut.writer] = _checked(cut, mac, keys)
    return found


def _seq_of(stream: str, writer: str, value: bytes) -> int:
    """The seq a Redis checkpoint names, unchecked (only to order it against the archive's)."""
    try:
        return decode_checkpoint(stream, writer, value, None).seq
    except IntegrityError:
        return 0


def _checked(cut: ChainCheckpoint, mac: str | None, keys: IntegrityKeys | None) -> StoredCheckpoint:
    if keys is not None and not checkpoint_signed(cut, mac, keys):
        why = "has no mac" if mac is None else "'s mac does not match (altered or forged)"
        return IntegrityError(f"the archive's checkpoint {why}")
    at = cut.cut_at.astimezone(UTC).isoformat(timespec="microseconds")
    return Checkpoint(cut.stream, cut.writer, cut.seq, cut.digest, _ARCHIVE_CUT_MINID, at)


async def _marks(redis: RedisClient, stream: str) -> dict[str, int]:
    """Each writer's high-water mark: `{<stream>}:writer:<id>`, kept by the writer's append
    script (sidecar.audit.writer, `_mark_prefix`: the two must agree)."""
    prefix = f"{{{stream}}}:writer:"
    marks: dict[str, int] = {}
    async for key in redis.scan_iter(match=prefix.translate(_GLOB_SPECIAL) + "*", count=1000):
        value = await redis.get(key)
        writer = key.decode(errors="replace").removeprefix(prefix)
        if value is not None and value.isdigit():
            marks[writer] = int(value)
    return marks


def _cleartext_record(record: Mapping[str, Any]) -> list[str]:
    """Content fields of a record stored in cleartext while encryption is on (SPEC §17). A
    legacy v1 token (a record written by an older release) is readable and authentic: not a
    finding here; `audit tail` shows it."""
    return [str(f) for f in content_findings(record) if f.kind == "cleartext"]


def _cleartext_event(event: Mapping[str, Any]) -> list[str]:
    """The same for an event's path."""
    return [str(f) for f in content_findings(event, EVENT_FIELDS) if f.kind == "cleartext"]
