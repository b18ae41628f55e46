"""Retention: stream entries older than `audit.retention_days` are trimmed by id time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from sidecar.storage.client import RedisClient
from sidecar.storage.failures import tolerate_redis

TRIM_EVERY_S = 3600.0


async def trim_older_than(
    redis: RedisClient, stream: str, days: int, *, now: float | None = None
) -> int:
    """Drop entries older than `days`, judged by the time inside each stream id."""
    cutoff_ms = int(((now or time.time()) - days * 86400) * 1000)
    return int(await redis.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=False))


async def keep_trimmed(
    redis: RedisClient,
    streams: Sequence[str],
    days: int,
    *,
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Run until cancelled: trim every stream at start-up and then hourly."""
    while True:
        for stream in streams:
            with tolerate_redis(on_error):
                await trim_older_than(redis, stream, days)
        await asyncio.sleep(TRIM_EVERY_S)
