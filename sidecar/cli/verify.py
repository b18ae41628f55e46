"""`sidecar audit verify [--since DURATION]`: check both streams' tamper evidence (SPEC §17).

Each stream is read in pages, oldest first, through a `StreamVerifier`, with the retention
checkpoints and the writers' high-water marks read before the entries: a writer appends after
its mark is set, so every record a mark counts is in the stream by the time the walk gets there.
Exit status 0 when nothing is wrong, 1 on any finding, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sidecar.audit.checkpoints import checkpoints_key
from sidecar.audit.content import EVENT_FIELDS, content_findings
from sidecar.audit.events import EVENT_FIELD
from sidecar.audit.findings import StreamReport
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.audit.retention import redis_now_ms
from sidecar.audit.trail import RECORD_FIELD
from sidecar.audit.verify import ContentCheck, StreamVerifier
from sidecar.cli.verify_output import print_reports
from sidecar.config import Settings
from sidecar.durations import describe, parse_duration
from sidecar.errors import UsageError
from sidecar.storage.client import RedisClient, create_redis, unreachable
from sidecar.storage.failures import REDIS_FAILURES

PAGE = 1000
MAX_SINCE = timedelta(days=3650)
EXIT_OK, EXIT_FINDINGS = 0, 1
# A walk is repeated (this many times at most) when retention trimmed under it: its checkpoints,
# read before, may not cover what the trim removed ahead of the walk.
_ATTEMPTS = 3
_GLOB_SPECIAL = str.maketrans({char: "\\" + char for char in "*?[]\\"})
NO_KEY_WARNING = (
    "no integrity key (audit.integrity_key_file or audit.encryption_key_file): "
    "chain only: forged records cannot be told from real ones"
)


def add_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    """Add `audit verify` to the `audit` command's actions."""
    verify = actions.add_parser(
        "verify", parents=[common], help="check the streams' tamper evidence (exit 1 on findings)"
    )
    verify.add_argument(
        "--since",
        help="only the entries of a duration back from now by Redis's clock (1h, 7d), at most "
        f"{describe(MAX_SINCE)}; default: everything",
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
    streams = [
        (settings.audit.stream, RECORD_FIELD, _cleartext_record if encrypted else None),
        (settings.audit.events_stream, EVENT_FIELD, _cleartext_event if encrypted else None),
    ]
    redis = create_redis(settings.redis)
    try:
        reports = [
            await verify_stream(redis, stream, field, keys, since=since, content=content)
            for stream, field, content in streams
        ]
    except REDIS_FAILURES as exc:
        raise unreachable(settings.redis.url, exc) from None
    finally:
        await redis.aclose()
    print_reports(reports, as_json=args.json, keyed=keys is not None, since=args.since)
    return EXIT_FINDINGS if any(report.findings for report in reports) else EXIT_OK


async def verify_stream(
    redis: RedisClient,
    stream: str,
    field: str,
    keys: IntegrityKeys | None,
    *,
    since: timedelta | None = None,
    content: ContentCheck | None = None,
) -> StreamReport:
    """Walk `stream` (documents in `field`) and report its findings."""
    start = "-"
    if since is not None:
        start = f"{max(0, await redis_now_ms(redis, stream) - int(since.total_seconds() * 1000))}-0"
    for attempt in range(_ATTEMPTS):
        checkpoints = await _checkpoints(redis, stream)
        verifier = StreamVerifier(
            stream,
            keys,
            checkpoints=checkpoints,
            marks=await _marks(redis, stream),
            since=since is not None,
            content=content,
        )
        await _walk(redis, stream, field.encode(), start, verifier)
        if attempt + 1 == _ATTEMPTS or await _checkpoints(redis, stream) == checkpoints:
            break
    return verifier.finish()


async def _walk(
    redis: RedisClient, stream: str, field: bytes, start: str, verifier: StreamVerifier
) -> None:
    while True:
        entries: Any = await redis.xrange(stream, min=start, count=PAGE)
        for entry_id, fields in entries:
            verifier.feed(entry_id.decode(), fields.get(field))
        if len(entries) < PAGE:
            return
        start = "(" + entries[-1][0].decode()


async def _checkpoints(redis: RedisClient, stream: str) -> dict[str, bytes]:
    stored: Any = await redis.hgetall(checkpoints_key(stream))
    return {writer.decode(errors="replace"): value for writer, value in stored.items()}


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
