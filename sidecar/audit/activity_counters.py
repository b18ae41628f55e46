"""Per-minute activity counters kept in Redis, for a sidecar without an archive (SPEC §16).

With `archive.url` set, the archiver counts each archived row once in `activity_minutes`; without
it, the serving process counts here instead, in memory, and adds its counts to one Redis hash per
epoch minute, `{sidecar:activity}:<minute>`, field `<key id or ->|<outcome>`, every second and
once more on the way out, and to one per epoch hour, `{sidecar:activity}:hour:<hour>`, so that
30 days are 720 reads rather than 43,200 (about a second on a small host). The hashes die
`audit.retention_days` after their minute or hour, like the streams they summarise, so the
admin API reads activity without ever scanning a stream.

What is counted is exactly what the archive counts, so the two sources agree:
- `allowed`: an audit record, counted when the trail queues it (whatever its status: it passed
  authentication, or its route needs none);
- an authentication event's name (`invalid_key`, `rate_limited`, …), counted when the event
  log queues it.

Counters are metadata, not the audit trail: while Redis is down the counts wait in memory, at
most `MAX_PENDING_MINUTES` minutes of them (the oldest minute is dropped, with a warning, past
that), and a flush whose reply is lost after Redis applied it may count those once more.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import structlog

from sidecar.storage.client import RedisClient
from sidecar.storage.failures import tolerate_redis

log = structlog.get_logger("sidecar.audit.activity")

KEY_PREFIX = "{sidecar:activity}:"  # one hash slot: a flush is one pipeline on a cluster too
ALLOWED = "allowed"  # the outcome of an audit record; the archive's `tables.ALLOWED`
NO_KEY = "-"  # the key id of a request that presented none (the archive writes '')
FLUSH_EVERY_S = 1.0
MAX_PENDING_MINUTES = 24 * 60
# Fields per minute grow with the key ids seen (a flood of made-up ids included): bounded too.
MAX_PENDING_FIELDS = 200_000

CountActivity = Callable[[str | None, str], None]  # (key id, outcome)


def minute_key(minute: int) -> str:
    """The hash of epoch minute `minute` (seconds since the epoch // 60)."""
    return f"{KEY_PREFIX}{minute}"


def hour_key(hour: int) -> str:
    """The hash of epoch hour `hour` (seconds since the epoch // 3600)."""
    return f"{KEY_PREFIX}hour:{hour}"


def field_name(key_id: str | None, outcome: str) -> str:
    """`<key id>|<outcome>`; key ids are base62 and outcomes snake_case, so `|` is unambiguous."""
    return f"{key_id or NO_KEY}|{outcome}"


def parse_field(field: str) -> tuple[str | None, str]:
    """`(key id or None, outcome)` of a field written by `field_name`."""
    key_id, _, outcome = field.partition("|")
    return (None if key_id == NO_KEY else key_id), outcome


class ActivityCounters:
    """Counts in memory (`count`, cheap enough for the request path) and adds them to Redis
    (`flush`, from `run` every second and once on shutdown)."""

    def __init__(
        self,
        redis: RedisClient,
        retention_days: int,
        *,
        on_redis_error: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._retention_s = retention_days * 86_400
        self._on_redis_error = on_redis_error
        self._clock = clock
        self._pending: dict[int, Counter[str]] = {}
        self._fields = 0

    def count(self, key_id: str | None, outcome: str) -> None:
        """One more `outcome` for `key_id` (None: no key) in the current minute."""
        minute = int(self._clock()) // 60
        counts = self._pending.get(minute)
        if counts is None:
            counts = self._pending[minute] = Counter()
        name = field_name(key_id, outcome)
        if name not in counts:
            self._fields += 1
        counts[name] += 1
        if len(self._pending) > MAX_PENDING_MINUTES or self._fields > MAX_PENDING_FIELDS:
            self._drop_oldest()

    @property
    def pending(self) -> int:
        """How many counts wait to be flushed."""
        return sum(sum(counts.values()) for counts in self._pending.values())

    async def flush(self) -> bool:
        """Add every pending count to Redis in one pipeline; False (the counts kept for the
        next flush) when Redis fails."""
        if not self._pending:
            return True
        # Taken before the first await: what is counted meanwhile waits for the next flush.
        pending, self._pending, self._fields = self._pending, {}, 0
        with tolerate_redis(self._on_redis_error) as call:
            async with self._redis.pipeline(transaction=False) as pipe:
                for minute, counts in sorted(pending.items()):
                    hour = minute // 60
                    for key, ends in (
                        (minute_key(minute), minute * 60 + 60),
                        (hour_key(hour), hour * 3600 + 3600),
                    ):
                        for name, n in counts.items():
                            pipe.hincrby(key, name, n)
                        # Dies a retention after its minute or hour, however late this comes.
                        pipe.expireat(key, ends + self._retention_s)
                await pipe.execute()
        if call.failed:
            self._restore(pending)
            return False
        return True

    async def run(self) -> None:
        """Run until cancelled: `flush` every `FLUSH_EVERY_S`."""
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self.flush()

    def _restore(self, pending: dict[int, Counter[str]]) -> None:
        for minute, counts in pending.items():
            kept = self._pending.setdefault(minute, Counter())
            for name, n in counts.items():
                if name not in kept:
                    self._fields += 1
                kept[name] += n
        while len(self._pending) > MAX_PENDING_MINUTES or self._fields > MAX_PENDING_FIELDS:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        minute = min(self._pending)
        counts = self._pending.pop(minute)
        self._fields -= len(counts)
        log.warning(
            "activity counts dropped: Redis has been unreachable too long",
            minute=minute,
            counts=sum(counts.values()),
        )
