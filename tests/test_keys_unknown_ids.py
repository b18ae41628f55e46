"""Issue 16: an id Redis does not hold costs no argon2 and, repeated, no Redis round trip;
a key created (or rotated in) under an id cached as unknown works at once; a resubscription
of the invalidation feed forgets every unknown id. Real proxy, real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

import sidecar.keys.store as store_module
from sidecar.keys.format import generate_key
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.store import KeyStore
from tests.authsupport import ROUTES, call, expect_event
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import (
    command_calls,
    issue,
    keys_section,
    metric_value,
    wait_for_invalidation_listeners,
)

# Polling a key until it works costs failed attempts meanwhile: keep them under the limit.
LENIENT = {"failed_auth_per_ip": {"requests": 10_000, "per_seconds": 60}}


async def _metric(proxy: Proxy, name: str) -> float:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        return metric_value(await response.text(), name)


async def _started(start_proxy: ProxyFactory, redis: aioredis.Redis, **sections: Any) -> Proxy:
    proxy: Proxy = await start_proxy(routes=ROUTES, **sections)
    # The first subscription clears the caches: it must not land in the middle of a test.
    await wait_for_invalidation_listeners(redis)
    return proxy


def _issue_as(monkeypatch: pytest.MonkeyPatch, pair: tuple[str, Any]) -> None:
    """The next key the store makes is `pair` (made earlier, so its id could be presented
    before the key existed: the only way an id can be cached as unknown and then created)."""
    monkeypatch.setattr(store_module, "generate_key", lambda _prefix, _environment: pair)


async def _works(proxy: Proxy, key: str) -> bool:
    return (await call(proxy, "/v1/orders/1", key=key)).status == 200


async def test_an_unknown_id_runs_no_argon2_and_its_repeat_no_redis_fetch(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy = await _started(
        start_proxy,
        redis_client,
        keys=keys_section(),
        rate_limits={"failed_auth_per_ip": {"requests": 3, "per_seconds": 60}},
    )
    unknown = generate_key("sk", "live")[0]
    runs = await _metric(proxy, "sidecar_argon2_verifications_total")

    before = await command_calls(redis_client)
    first = await call(proxy, "/v1/orders/1", key=unknown)
    fetched = await command_calls(redis_client)
    assert first.status == 401
    assert fetched.get("hgetall", 0) == before.get("hgetall", 0) + 1  # Redis was asked once

    again = await call(proxy, "/v1/orders/1", key=unknown)
    after = await command_calls(redis_client)
    assert again.status == 401
    assert again.body == first.body | {"request_id": again.request_id}
    assert after.get("hgetall", 0) == fetched.get("hgetall", 0)  # answered from the cache
    assert await _metric(proxy, "sidecar_argon2_verifications_total") == runs

    # Each try is still an event and still counts against the address's failed attempts.
    await expect_event(redis_client, first.request_id, "unknown_key")
    await expect_event(redis_client, again.request_id, "unknown_key")
    assert (await call(proxy, "/v1/orders/1", key=unknown)).status == 401
    assert (await call(proxy, "/v1/orders/1", key=unknown)).status == 429


async def test_a_key_created_under_an_id_cached_as_unknown_works_at_once(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await _started(
        start_proxy,
        redis_client,
        keys=keys_section(unknown_id_cache_s=300),
        rate_limits=LENIENT,
    )
    pair = generate_key("sk", "live")
    assert (await call(proxy, "/v1/orders/1", key=pair[0])).status == 401  # now cached

    _issue_as(monkeypatch, pair)
    await issue(redis_client, proxy.server.sidecar.settings, "born", ["orders:read"])
    # The creation's announcement, not the 300 s TTL, lets it through.
    await wait_until(lambda: _works(proxy, pair[0]), within=1)


async def test_a_rotated_in_id_cached_as_unknown_works_at_once(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await _started(
        start_proxy,
        redis_client,
        keys=keys_section(unknown_id_cache_s=300),
        rate_limits=LENIENT,
    )
    settings = proxy.server.sidecar.settings
    await issue(redis_client, settings, "turning", ["orders:read"])
    pair = generate_key("sk", "live")
    assert (await call(proxy, "/v1/orders/1", key=pair[0])).status == 401

    _issue_as(monkeypatch, pair)
    hasher = SecretHasher(settings.keys.argon2)
    await KeyStore(redis_client).rotate("turning", grace_s=60, prefix="sk", hasher=hasher)
    await wait_until(lambda: _works(proxy, pair[0]), within=1)


async def test_a_resubscription_forgets_every_unknown_id(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An announcement missed while the feed was down: the resubscription must make up for
    it, or a new key would be refused for the whole TTL."""
    proxy = await _started(
        start_proxy,
        redis_client,
        keys=keys_section(unknown_id_cache_s=300),
        rate_limits=LENIENT,
    )
    pair = generate_key("sk", "live")
    assert (await call(proxy, "/v1/orders/1", key=pair[0])).status == 401

    _issue_as(monkeypatch, pair)

    async def unheard(*_key_ids: str) -> None:
        """The announcement lost (published while nobody listened)."""

    monkeypatch.setattr(KeyStore, "_announce", lambda _self, *ids: unheard(*ids))
    await issue(redis_client, proxy.server.sidecar.settings, "unheard", ["orders:read"])
    before = await command_calls(redis_client)
    assert (await call(proxy, "/v1/orders/1", key=pair[0])).status == 401  # still cached
    assert (await command_calls(redis_client)).get("hgetall", 0) == before.get("hgetall", 0)

    await redis_client.client_kill_filter(_type="pubsub")  # the feed drops; it resubscribes
    await wait_until(lambda: _works(proxy, pair[0]), within=5)


async def test_without_the_cache_every_unknown_id_is_asked_of_redis(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy = await _started(start_proxy, redis_client, keys=keys_section(unknown_id_cache_s=0))
    unknown = generate_key("sk", "live")[0]
    before = await command_calls(redis_client)
    for _ in range(2):
        assert (await call(proxy, "/v1/orders/1", key=unknown)).status == 401
    after = await command_calls(redis_client)
    assert after.get("hgetall", 0) == before.get("hgetall", 0) + 2
