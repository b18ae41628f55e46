"""Retention: stream entries older than `audit.retention_days` by Redis's clock are trimmed,
after checkpointing what the trim removes (SPEC §7, §17).

The cutoff is Redis's `TIME` on the node holding the stream, the clock its entry ids come
from; the host's clock is never read, so a replica whose clock is 100 days fast trims nothing
early. Before trimming, the range to be removed is read in pages and the last (seq, digest) of
every writer in it is kept as a checkpoint (`audit.checkpoints`), so `audit verify` can tell
the trimmed prefix from deleted records. The checkpoint is written before the XTRIM: a crash in
between leaves a checkpoint ahead of the trim, which verify accepts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from sidecar.audit.checkpoints import (
    Checkpoint,
    checkpoints_key,
    decode_checkpoint,
    encode_checkpoint,
)
from sidecar.audit.integrity import IntegrityError, IntegrityKeys, check
from sidecar.storage.client import RedisClient
from sidecar.storage.failures import tolerate_redis

log = structlog.get_logger("sidecar.audit.retention")

TRIM_EVERY_S = 3600.0
PAGE = 1000
DAY_MS = 86_400_000
_MAX_ID_SEQ = 18446744073709551615  # the largest sequence part of a stream id

# KEYS: the stream. Run as a script so it executes on the stream's own node (a plain TIME on a
# cluster client goes to every node).
_NOW = "local t = redis.call('TIME') return {t[1], t[2]}"

# KEYS: the checkpoint hash. ARGV: n, then n triples of writer, seq, value, then pairs of writer and
# a current value this process judged invalid (forged, unparsable). A checkpoint only moves
# forward, so two replicas trimming at once cannot leave it behind the trim; an invalid one is
# replaced only while it is still the value that was judged.
_SET_FORWARD = """
local n = tonumber(ARGV[1])
local stale = {}
for k = 2 + 3 * n, #ARGV, 2 do stale[ARGV[k]] = ARGV[k + 1] end
for i = 2, 1 + 3 * n, 3 do
  local writer, seq, value = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local current = redis.call('HGET', KEYS[1], writer)
  local replace = not current or current == stale[writer]
  if not replace then
    local ok, parsed = pcall(cjson.decode, current)
    local held = ok and type(parsed) == 'table' and tonumber(parsed['seq'])
    replace = not held or held < seq
  end
  if replace then redis.call('HSET', KEYS[1], writer, value) end
end
return n
"""


async def redis_now_ms(redis: RedisClient, stream: str) -> int:
    """Now, in milliseconds, by the clock of the Redis node holding `stream`."""
    seconds, micros = await redis.register_script(_NOW)(keys=[stream])
    return int(seconds) * 1000 + int(micros) // 1000


async def trim_older_than(
    redis: RedisClient,
    stream: str,
    days: int,
    *,
    integrity: IntegrityKeys | None = None,
    cutoff_ms: int | None = None,
) -> int:
    """Checkpoint, then drop, the entries older than `days` by Redis's clock; how many went.

    `cutoff_ms` trims less than `days` allows (an earlier cutoff); one that would remove
    entries newer than `days`, or `days` < 1, is refused: logged as an error, nothing removed."""
    if days < 1:
        log.error("retention trim refused: retention_days below 1", stream=stream, days=days)
        return 0
    now_ms = await redis_now_ms(redis, stream)
    latest = now_ms - days * DAY_MS
    cutoff = latest if cutoff_ms is None else cutoff_ms
    if cutoff > latest:
        log.error(
            "retention trim refused: the cutoff is newer than the retention by Redis's clock",
            stream=stream,
            days=days,
            cutoff=_iso(cutoff),
            redis_time=_iso(now_ms),
        )
        return 0
    minid = f"{cutoff}-0"
    lasts = await _last_of_each_writer(redis, stream, cutoff, integrity)
    if lasts:
        checkpoints = [
            Checkpoint(stream, writer, seq, digest, minid, _iso(now_ms))
            for writer, (seq, digest) in lasts.items()
        ]
        await _save_forward(redis, stream, checkpoints, integrity)
    removed = int(await redis.xtrim(stream, minid=minid, approximate=False))
    log.info("audit stream trimmed", stream=stream, removed=removed, cutoff=_iso(cutoff))
    return removed


async def _last_of_each_writer(
    redis: RedisClient, stream: str, cutoff: int, integrity: IntegrityKeys | None
) -> dict[str, tuple[int, str]]:
    """The highest (seq, digest) of each writer among the entries older than `cutoff`, read in
    pages: memory grows with the writers, not with the entries."""
    lasts: dict[str, tuple[int, str]] = {}
    unchecked = 0
    start, end = "-", f"{cutoff - 1}-{_MAX_ID_SEQ}"
    while cutoff > 0:
        entries: Any = await redis.xrange(stream, min=start, max=end, count=PAGE)
        for _entry_id, fields in entries:
            for document in fields.values():
                try:
                    link = check(stream, document, integrity)
                except IntegrityError:
                    unchecked += 1  # forged or legacy: nothing a checkpoint may vouch for
                    continue
                if link.writer not in lasts or lasts[link.writer][0] < link.seq:
                    lasts[link.writer] = (link.seq, link.digest)
        if len(entries) < PAGE:
            break
        start = "(" + entries[-1][0].decode()
    if unchecked:
        log.warning(
            "retention trims entries that fail the integrity check, without a checkpoint",
            stream=stream,
            entries=unchecked,
        )
    return lasts


async def _save_forward(
    redis: RedisClient,
    stream: str,
    checkpoints: list[Checkpoint],
    integrity: IntegrityKeys | None,
) -> None:
    key = checkpoints_key(stream)
    writers = [checkpoint.writer for checkpoint in checkpoints]
    current: Any = await redis.hmget(key, writers)
    args: list[str | bytes | int] = [len(checkpoints)]
    for checkpoint in checkpoints:
        args += [checkpoint.writer, checkpoint.seq, encode_checkpoint(checkpoint, integrity)]
    for writer, value in zip(writers, current, strict=True):
        if value is not None and not _valid(stream, writer, value, integrity):
            args += [writer, value]
    await redis.register_script(_SET_FORWARD)(keys=[key], args=args)


def _valid(stream: str, writer: str, value: bytes, integrity: IntegrityKeys | None) -> bool:
    try:
        decode_checkpoint(stream, writer, value, integrity)
    except IntegrityError:
        return False
    return True


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def keep_trimmed(
    redis: RedisClient,
    streams: Sequence[str],
    days: int,
    *,
    on_error: Callable[[], None] = lambda: None,
    integrity: IntegrityKeys | None = None,
) -> None:
    """Run until cancelled: trim every stream at start-up and then hourly."""
    while True:
        for stream in streams:
            with tolerate_redis(on_error):
                await trim_older_than(redis, stream, days, integrity=integrity)
        await asyncio.sleep(TRIM_EVERY_S)
