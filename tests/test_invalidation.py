"""The invalidation listener against a real Redis: it notices a connection that fell silent
(a server gone without closing the socket, as in a failover) and resubscribes; and a
resubscription expires the key cache rather than emptying it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from sidecar.config import Redis as RedisSettings
from sidecar.keys.cache import KeyCache
from sidecar.keys.invalidation import listen_for_invalidations
from sidecar.keys.records import KeyRecord
from sidecar.keys.store import INVALIDATE_CHANNEL
from sidecar.storage.client import create_pubsub_opener
from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import wait_until


@dataclass
class Relay:
    """A TCP relay to Redis that can go silent: it keeps the connections it has open but
    stops passing bytes on them, like a peer that vanished. New connections work."""

    target_port: int
    port: int = 0
    frozen: list[asyncio.StreamWriter] = field(default_factory=list)
    _live: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if writer in self.frozen:
                    continue  # swallowed: the other side hears nothing, and nothing closes
                writer.write(data)
                await writer.drain()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._live.append((client_w, server_w))
        for task in (self._pipe(client_r, server_w), self._pipe(server_r, client_w)):
            spawned = asyncio.create_task(task)
            self._tasks.add(spawned)
            spawned.add_done_callback(self._tasks.discard)

    def freeze(self) -> None:
        """Silence every connection open now, both ways."""
        for client_w, server_w in self._live:
            self.frozen += [client_w, server_w]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            for client_w, server_w in self._live:
                client_w.close()
                server_w.close()
            await server.wait_closed()


async def test_a_silent_connection_is_given_up_and_the_feed_resubscribes(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    dropped: list[str] = []
    subscriptions: list[None] = []
    errors: list[None] = []
    async with Relay(redis_server.port).running() as relay:
        settings = RedisSettings(url=f"redis://127.0.0.1:{relay.port}/0")
        listener = asyncio.create_task(
            listen_for_invalidations(
                create_pubsub_opener(settings, redis_client),
                drop=dropped.append,
                expire_all=lambda: subscriptions.append(None),
                on_error=lambda: errors.append(None),
                heartbeat_s=0.2,
            )
        )
        try:

            async def subscribed_times(count: int) -> bool:
                numsub = await redis_client.pubsub_numsub(INVALIDATE_CHANNEL)
                return len(subscriptions) >= count and int(numsub[0][1]) >= 1

            await wait_until(lambda: subscribed_times(1), within=5)
            await redis_client.publish(INVALIDATE_CHANNEL, "before")
            await wait_until(lambda: _async(dropped == ["before"]), within=2)

            relay.freeze()  # no FIN, no RST: only the missing PONG tells
            await wait_until(lambda: subscribed_times(2), within=3)
            assert len(errors) == 1
            await redis_client.publish(INVALIDATE_CHANNEL, "after")
            await wait_until(lambda: _async("after" in dropped), within=2)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def _async(value: bool) -> bool:
    return value


def record(key_id: str) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        name=key_id,
        hash="x",
        scopes=("orders:read",),
        environment="live",
        created_at=0.0,
    )


def test_expiring_the_cache_keeps_entries_for_the_stale_window_only() -> None:
    now = [1000.0]
    cache = KeyCache(ttl_s=30, stale_s=300, clock=lambda: now[0])
    cache.put("fresh", b"d", record("fresh"))
    now[0] += 100  # "old" is verified later, 100 s after "fresh"
    cache.put("old", b"d", record("old"))
    cache.expire_all()

    hit = cache.get("old", b"d")
    assert hit is not None
    assert not hit.fresh  # checked against Redis on its next use...
    now[0] += 299
    assert cache.get("old", b"d") is not None  # ...and served meanwhile if Redis is down
    now[0] += 2
    assert cache.get("old", b"d") is None  # but no longer than the stale window
    assert cache.get("fresh", b"d") is None  # windows still count from the verification
