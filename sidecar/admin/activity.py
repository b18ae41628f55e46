"""Activity over a range (SPEC §16): allowed requests and each rejection event, per bucket.

Read from the per-minute counters, never from the streams: the archive's `activity_minutes`
when `archive.url` is set (the archiver counts each row it archives, once), else the Redis
hashes the serving processes keep (`sidecar.audit.activity_counters`). Buckets are aligned on
multiples of their size since the epoch (UTC), the newest one holding the current minute; every
bucket of the range is listed, empty ones included, so a chart needs no gap filling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sidecar.archive.database import ArchiveUnavailable, Connection, connect, database_errors
from sidecar.audit.activity_counters import ALLOWED, hour_key, minute_key, parse_field
from sidecar.errors import Unavailable
from sidecar.storage.client import RedisClient
from sidecar.storage.failures import REDIS_FAILURES

Range = Literal["1h", "24h", "7d", "30d"]
RANGES: tuple[Range, ...] = get_args(Range)


@dataclass(frozen=True, slots=True)
class Span:
    """A range's length and its bucket size, in seconds."""

    seconds: int
    bucket_s: int


SPANS: dict[Range, Span] = {
    "1h": Span(3600, 60),
    "24h": Span(86_400, 900),
    "7d": Span(7 * 86_400, 3600),
    "30d": Span(30 * 86_400, 21_600),
}
# An archive key id for requests without a key: '' (the counters' NO_KEY is Redis's spelling).
_ARCHIVE_NO_KEY = ""

_SQL = (
    "SELECT (floor(extract(epoch FROM ts) / %(b)s) * %(b)s)::bigint, outcome, sum(count)::bigint "
    "FROM activity_minutes WHERE ts >= to_timestamp(%(start)s) AND ts < to_timestamp(%(end)s)"
)
_SQL_KEY = " AND key_id = %(key)s"
_SQL_GROUP = " GROUP BY 1, 2"

Count = tuple[int, str, int]  # (bucket start, outcome, n)


class ActivityReader:
    """Sums the per-minute counters into a range's buckets, for one key or for all."""

    def __init__(
        self,
        redis: RedisClient,
        archive_url: str | None,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._archive_url = archive_url
        self._timeout_s = timeout_s
        self._clock = clock

    async def buckets(self, range_: str, key_id: str | None) -> dict[str, Any]:
        """`{"range", "bucket_s", "buckets": [{"start", "allowed", "rejected": {event: n}}],
        "totals": {"allowed", "rejected"}}`, oldest bucket first, for `key_id` (None: every
        key and none). `ValueError` for a range not in `RANGES` (the handler checked it);
        `Unavailable` when the counters cannot be read."""
        if range_ not in SPANS:
            raise ValueError(f"range: one of {', '.join(RANGES)}")
        name: Range = range_  # narrowed by the check above
        span = SPANS[name]
        newest = int(self._clock()) // span.bucket_s * span.bucket_s
        first = newest - span.seconds + span.bucket_s
        end = newest + span.bucket_s
        if self._archive_url is not None:
            counts = await self._from_archive(self._archive_url, span, first, end, key_id)
        else:
            counts = await self._from_redis(span, first, end, key_id)
        return _document(name, span, first, end, counts)

    async def _from_archive(
        self, url: str, span: Span, start: int, end: int, key_id: str | None
    ) -> list[Count]:
        query = _SQL + (_SQL_KEY if key_id is not None else "") + _SQL_GROUP
        params = {"b": span.bucket_s, "start": start, "end": end, "key": key_id or _ARCHIVE_NO_KEY}
        conn: Connection | None = None
        try:
            conn = await connect(url, self._timeout_s)
            with database_errors():
                cursor = await conn.execute(query, params)
                rows = await cursor.fetchall()
        except ArchiveUnavailable as exc:
            raise Unavailable(f"activity cannot be read: {exc}", retry_after=5) from None
        finally:
            if conn is not None:
                await conn.close()
        return [(int(bucket), str(outcome), int(n)) for bucket, outcome, n in rows]

    async def _from_redis(
        self, span: Span, start: int, end: int, key_id: str | None
    ) -> list[Count]:
        # Hourly buckets and coarser read the hourly hashes (they are aligned on hours too).
        unit = 3600 if span.bucket_s % 3600 == 0 else 60
        key = hour_key if unit == 3600 else minute_key
        periods = range(start // unit, end // unit)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for period in periods:
                    pipe.hgetall(key(period))
                hashes: list[dict[bytes, bytes]] = await pipe.execute()
        except REDIS_FAILURES:
            raise Unavailable("activity cannot be read: Redis unreachable", retry_after=5) from None
        counts: list[Count] = []
        for period, fields in zip(periods, hashes, strict=True):
            bucket = period * unit // span.bucket_s * span.bucket_s
            for name, n in fields.items():
                field_key, outcome = parse_field(name.decode())
                if key_id is None or field_key == key_id:
                    counts.append((bucket, outcome, int(n)))
        return counts


def _document(
    name: Range, span: Span, start: int, end: int, counts: Iterable[Count]
) -> dict[str, Any]:
    allowed = dict.fromkeys(range(start, end, span.bucket_s), 0)
    rejected: dict[int, dict[str, int]] = {bucket: {} for bucket in allowed}
    totals: dict[str, int] = {}
    total_allowed = 0
    for bucket, outcome, n in counts:
        if bucket not in allowed:
            continue  # never expected: both sources are asked for the range's minutes only
        if outcome == ALLOWED:
            allowed[bucket] += n
            total_allowed += n
        else:
            rejected[bucket][outcome] = rejected[bucket].get(outcome, 0) + n
            totals[outcome] = totals.get(outcome, 0) + n
    return {
        "range": name,
        "bucket_s": span.bucket_s,
        "buckets": [
            {"start": rfc3339(bucket), "allowed": allowed[bucket], "rejected": rejected[bucket]}
            for bucket in allowed
        ],
        "totals": {"allowed": total_allowed, "rejected": totals},
    }


def rfc3339(epoch_s: int) -> str:
    """`2026-12-02T15:00:00Z`."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
