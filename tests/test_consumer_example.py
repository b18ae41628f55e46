"""The README's consumer-group example works against a real stream written by the sidecar."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from examples.consume_audit import consume
from sidecar.storage.embedded import EmbeddedRedis
from tests.conftest import Proxy
from tests.helpers import wait_until


async def test_consumer_group_reads_each_record_once_and_acknowledges(
    proxy: Proxy, redis_client: aioredis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    ids = []
    for index in range(5):
        async with proxy.request("POST", f"/public/n{index}", json={"n": index}) as response:
            assert response.status == 200
            ids.append(response.headers["X-Request-Id"])

    async def all_written() -> bool:
        return int(await redis_client.xlen("sidecar:audit")) == 5

    await wait_until(all_written, within=5)
    seen: list[dict[str, Any]] = []

    def run(consumer: str) -> int:
        client = redis.Redis.from_url(redis_server.url)
        try:
            return consume(client, seen.append, consumer=consumer, block_ms=100, max_batches=3)
        finally:
            client.close()

    assert await asyncio.to_thread(run, "worker-1") == 5
    assert sorted(record["request_id"] for record in seen) == sorted(ids)
    # Acknowledged: a second consumer of the same group gets nothing again.
    assert await asyncio.to_thread(run, "worker-2") == 0
    pending = await redis_client.xpending("sidecar:audit", "audit-readers")
    assert pending["pending"] == 0
