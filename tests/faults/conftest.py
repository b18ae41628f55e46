"""Fixtures of the fault suite: a Redis of the test's own, to stop, pause and restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sidecar.storage.embedded import EmbeddedRedis


@pytest.fixture
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    """A `redis-server` for this test alone. Stopping, pausing or snapshotting it cannot leak
    into other tests, as it would with the session's shared server (a `dump.rdb` left in its
    folder would be loaded by the next test that restarts it)."""
    server = EmbeddedRedis()
    # start()/close() poll a child process synchronously: off the event loop, which is
    # serving the in-process sidecar meanwhile.
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


@pytest.fixture
async def own_redis_client(own_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own Redis that reconnects after the server was restarted."""
    client = aioredis.Redis.from_url(
        own_redis.url,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    yield client
    await client.aclose()
