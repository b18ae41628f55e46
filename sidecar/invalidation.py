"""Every replica drops its cached copy of a key the moment the key store announces a change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from sidecar.keystore import INVALIDATE_CHANNEL

log = structlog.get_logger("sidecar.invalidation")

_RETRY_S = 0.5


async def listen_for_invalidations(
    redis_url: str,
    *,
    drop: Callable[[str], None],
    clear: Callable[[], None],
    on_error: Callable[[], None] = lambda: None,
    subscribed: asyncio.Event | None = None,
) -> None:
    """Run until cancelled: subscribe, drop each announced key id, resubscribe after failures.

    A (re)subscription clears the whole cache: announcements made while we were not
    listening are lost, and the cache TTL alone would leave revoked keys working too long.
    """
    # Its own connection without a read timeout: a subscriber is idle most of the time.
    client = aioredis.Redis.from_url(
        redis_url, socket_timeout=None, socket_keepalive=True, health_check_interval=5
    )
    try:
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATE_CHANNEL)
                clear()
                if subscribed is not None:
                    subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        drop(message["data"].decode())
            except (RedisError, OSError) as exc:
                on_error()
                if subscribed is not None:
                    subscribed.clear()
                log.warning("key invalidation feed lost; resubscribing", error=str(exc))
                await asyncio.sleep(_RETRY_S)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
