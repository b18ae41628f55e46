"""Every replica drops its cached copy of a key the moment the key store announces a change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from sidecar.keys.store import INVALIDATE_CHANNEL
from sidecar.storage.client import PubSubOpener
from sidecar.storage.failures import REDIS_FAILURES

log = structlog.get_logger("sidecar.invalidation")

_RETRY_S = 0.5
# A quiet feed is asked for a PONG this often; a connection that stays silent for another
# such interval is given up, so a server that vanished without closing the socket (a host
# gone in a failover) is noticed and the listener moves to where the data now is.
HEARTBEAT_S = 5.0


async def listen_for_invalidations(
    open_pubsub: PubSubOpener,
    *,
    drop: Callable[[str], None],
    expire_all: Callable[[], None],
    on_error: Callable[[], None] = lambda: None,
    subscribed: asyncio.Event | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> None:
    """Run until cancelled: subscribe, drop each announced key id, resubscribe after failures.

    A (re)subscription expires the whole cache: announcements made while we were not
    listening are lost, and the cache TTL alone would leave revoked keys working too long.
    Expired, not dropped: during a failover the feed may be back (on a cluster, any node
    serves it) before the keys' master is, and cached keys must keep working meanwhile.
    `open_pubsub` decides where each subscription connects (see `create_pubsub_opener`).
    """
    failing = False
    while True:
        try:
            async with open_pubsub() as pubsub:
                await pubsub.subscribe(INVALIDATE_CHANNEL)
                expire_all()
                if subscribed is not None:
                    subscribed.set()
                if failing:
                    log.info("key invalidation feed back")
                    failing = False
                await _receive(pubsub, drop, heartbeat_s)
        except REDIS_FAILURES as exc:
            on_error()
            if subscribed is not None:
                subscribed.clear()
            if not failing:  # once per outage, not every half second of a failover
                log.warning("key invalidation feed lost; resubscribing", error=_brief(exc))
                failing = True
            await asyncio.sleep(_RETRY_S)


def _brief(exc: BaseException) -> str:
    """The error's first line, bounded: some (no master found) quote whole client reprs."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


async def _receive(pubsub: PubSub, drop: Callable[[str], None], heartbeat_s: float) -> None:
    """Hand each announced id to `drop` until the connection fails or falls silent."""
    clock = asyncio.get_running_loop().time
    pinged_at: float | None = None
    while True:
        # None also stands for a subscribe confirmation filtered out, so silence is judged
        # by the clock, not by the None alone.
        message = await pubsub.get_message(timeout=heartbeat_s)
        if message is not None:
            pinged_at = None  # anything at all shows the connection is alive
            if message.get("type") == "message":
                drop(message["data"].decode())
        elif pinged_at is None:
            await pubsub.ping()
            pinged_at = clock()
        elif clock() - pinged_at >= heartbeat_s:
            raise RedisConnectionError(f"no answer to PING within {heartbeat_s}s")
