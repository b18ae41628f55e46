"""A cached key whose entry ages past keys.cache_ttl_s is re-read from Redis, but argon2 does
not run again while the stored hash is the one it was verified against."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.conftest import Proxy, ProxyFactory
from tests.keysupport import FAST_KEYS, bearer, issue, metric_value

ROUTES = [{"path": "/v1/**", "scopes": ["orders:read"]}]


async def _argon2_runs(proxy: Proxy) -> float:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        return metric_value(await response.text(), "sidecar_argon2_verifications_total")


async def test_refresh_after_the_ttl_rereads_the_record_without_argon2(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy: Proxy = await start_proxy(keys={**FAST_KEYS, "cache_ttl_s": 0.2}, routes=ROUTES)
    new = await issue(redis_client, proxy.server.sidecar.settings, "steady", ["orders:read"])
    async with proxy.request("GET", "/v1/orders/1", headers=bearer(new.key)) as response:
        assert response.status == 200
    assert await _argon2_runs(proxy) == 1
    for _ in range(3):
        await asyncio.sleep(0.25)  # the stimulus: the cache entry ages past its TTL
        async with proxy.request("GET", "/v1/orders/1", headers=bearer(new.key)) as response:
            assert response.status == 200
    assert await _argon2_runs(proxy) == 1

    # Revoked meanwhile: the re-read record says so, still without argon2.
    await redis_client.hset(f"sidecar:{{keys}}:id:{new.record.key_id}", "revoked", "1")
    await asyncio.sleep(0.25)
    async with proxy.request("GET", "/v1/orders/1", headers=bearer(new.key)) as response:
        assert response.status == 401
    assert await _argon2_runs(proxy) == 1


async def test_a_changed_hash_is_verified_again(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy: Proxy = await start_proxy(keys={**FAST_KEYS, "cache_ttl_s": 0.2}, routes=ROUTES)
    new = await issue(redis_client, proxy.server.sidecar.settings, "rehashed", ["orders:read"])
    async with proxy.request("GET", "/v1/orders/1", headers=bearer(new.key)) as response:
        assert response.status == 200
    other = await issue(redis_client, proxy.server.sidecar.settings, "other", ["orders:read"])
    other_hash = await redis_client.hget(f"sidecar:{{keys}}:id:{other.record.key_id}", "hash")
    assert other_hash is not None
    # The stored hash no longer belongs to this secret: the refresh must not trust the cache.
    await redis_client.hset(f"sidecar:{{keys}}:id:{new.record.key_id}", "hash", other_hash)
    await asyncio.sleep(0.25)
    async with proxy.request("GET", "/v1/orders/1", headers=bearer(new.key)) as response:
        assert response.status == 401
    assert await _argon2_runs(proxy) == 2
