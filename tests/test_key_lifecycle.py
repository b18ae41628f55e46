"""SPEC §4 over time, through the proxy: expiry of cached keys, rotation grace and `Sunset`,
revocation and deletion reaching the cache through pub/sub, Redis going away, the argon2
budget, rehashing, and `last_used_at`. Real TLS, real Redis; deadlines, never sleeps."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from sidecar.config import Argon2
from sidecar.keys.format import parse_key
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.store import KeyStore
from sidecar.storage.embedded import EmbeddedRedis
from tests.authsupport import (
    EXPIRED,
    INVALID_TOKEN,
    REQUEST_TIMEOUT,
    ROUTES,
    Answer,
    call,
    expect_event,
)
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until, write_config
from tests.keysupport import (
    FAST_ARGON2,
    FAST_KEYS,
    command_calls,
    issue,
    keys_section,
    metric_value,
    sidecar_cli,
    wait_for_invalidation_listeners,
)

DAY = 86400.0
ARGON2 = "sidecar_argon2_verifications_total"


async def metrics(proxy: Proxy) -> str:
    url = proxy.health_url + "/metrics"
    async with proxy.session.get(url, timeout=REQUEST_TIMEOUT) as response:
        assert response.status == 200
        return await response.text()


async def argon2_runs(proxy: Proxy) -> float:
    return metric_value(await metrics(proxy), ARGON2)


async def status_becomes(proxy: Proxy, key: str, status: int, *, within: float) -> Answer:
    """Poll with `key` until the proxy answers `status`; return that answer."""
    last: list[Answer] = []

    async def answered() -> bool:
        last.append(await call(proxy, "/v1/orders/1", key=key))
        return last[-1].status == status

    await wait_until(answered, within=within)
    return last[-1]


def sunset_of(answer: Answer) -> datetime:
    return parsedate_to_datetime(answer.headers["Sunset"])


@pytest.fixture
async def proxy(start_proxy: ProxyFactory, redis_client: aioredis.Redis) -> Proxy:
    started: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES)
    await wait_for_invalidation_listeners(redis_client)
    return started


# --- expiry and Sunset --------------------------------------------------------------------


async def test_expiry_applies_to_a_key_already_in_the_cache(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    ends = time.time() + 2
    new = await issue(redis_client, settings, "brief", ["orders:read"], expires_at=ends)

    first = await call(proxy, "/v1/orders/1", key=new.key)
    assert first.status == 200
    # Within 7 days of its end: the client is told when.
    assert abs(sunset_of(first).timestamp() - ends) <= 1
    assert await argon2_runs(proxy) == 1

    refused = await status_becomes(proxy, new.key, 401, within=6)
    assert refused.headers["WWW-Authenticate"] == EXPIRED
    await expect_event(redis_client, refused.request_id, "expired_key")
    # It was refused from the cache (no second verification), by the clock alone.
    assert await argon2_runs(proxy) == 1


async def test_sunset_only_within_seven_days_of_expiry(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    soon_end = time.time() + 3 * DAY
    soon = await issue(redis_client, settings, "soon", ["orders:read"], expires_at=soon_end)
    later = await issue(
        redis_client, settings, "later", ["orders:read"], expires_at=time.time() + 30 * DAY
    )
    never = await issue(redis_client, settings, "never", ["orders:read"])

    answer = await call(proxy, "/v1/orders/1", key=soon.key)
    assert answer.status == 200
    assert abs(sunset_of(answer).timestamp() - soon_end) <= 1
    for key in (later.key, never.key):
        answer = await call(proxy, "/v1/orders/1", key=key)
        assert answer.status == 200
        assert "Sunset" not in answer.headers


# --- rotation -----------------------------------------------------------------------------


async def test_rotation_grace_keeps_both_keys_and_announces_the_old_ones_end(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    old = await issue(redis_client, settings, "svc", ["orders:read"])
    before = await call(proxy, "/v1/orders/1", key=old.key)
    assert before.status == 200
    assert "Sunset" not in before.headers

    rotated_at = time.time()
    new = await KeyStore(redis_client).rotate(
        "svc", grace_s=3600, prefix="sk", hasher=SecretHasher(settings.keys.argon2)
    )
    assert new.record.key_id != old.record.key_id

    # The rotation reaches the cached old key through pub/sub: Sunset appears within 1 s.
    async def old_has_sunset() -> bool:
        answer = await call(proxy, "/v1/orders/1", key=old.key)
        assert answer.status == 200
        return "Sunset" in answer.headers

    await wait_until(old_has_sunset, within=1)
    old_answer = await call(proxy, "/v1/orders/1", key=old.key)
    assert abs(sunset_of(old_answer).timestamp() - (rotated_at + 3600)) <= 5

    new_answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert new_answer.status == 200
    assert "Sunset" not in new_answer.headers


async def test_rotation_without_grace_ends_the_old_key_at_once(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: object
) -> None:
    settings = proxy.server.sidecar.settings
    old = await issue(redis_client, settings, "svc", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=old.key)).status == 200  # cached

    new = await KeyStore(redis_client).rotate(
        "svc", grace_s=0, prefix="sk", hasher=SecretHasher(settings.keys.argon2)
    )
    refused = await status_becomes(proxy, old.key, 401, within=1)
    assert refused.headers["WWW-Authenticate"] == EXPIRED
    await expect_event(redis_client, refused.request_id, "expired_key")
    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert answer.status == 200
    assert "Sunset" not in answer.headers


async def test_rotation_without_grace_ends_every_earlier_key_at_once(
    proxy: Proxy,
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    """SPEC §14, through `sidecar keys` and two real sidecars over TLS: `rotate --grace 0`
    ends the key before it and every earlier one still in its grace, in every replica's cache."""
    replica: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES)
    await wait_for_invalidation_listeners(redis_client, 2)
    config = str(
        write_config(tmp_path / "cli.yaml", {"redis": {"url": redis_server.url}, "keys": FAST_KEYS})
    )

    async def keys_cli(*args: str) -> dict[str, Any]:
        result = await sidecar_cli("keys", *args, "--json", "--config", config)
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    first = await keys_cli("create", "--name", "svc", "--scope", "orders:read")
    second = await keys_cli("rotate", "svc", "--grace", "1h")
    for sidecar in (proxy, replica):
        for key in (first["key"], second["key"]):
            assert (await call(sidecar, "/v1/orders/1", key=key)).status == 200  # cached

    third = await keys_cli("rotate", "svc", "--grace", "0")
    for sidecar in (proxy, replica):
        for key in (first["key"], second["key"]):
            refused = await status_becomes(sidecar, key, 401, within=1)
            assert refused.headers["WWW-Authenticate"] == EXPIRED
            await expect_event(redis_client, refused.request_id, "expired_key")
        answer = await call(sidecar, "/v1/orders/1", key=third["key"])
        assert answer.status == 200
        assert "Sunset" not in answer.headers

    now = time.time()
    records = {record.key_id: record for record in await KeyStore(redis_client).records()}
    assert records[first["id"]].status(now) == "expired"
    assert records[second["id"]].status(now) == "expired"
    assert records[third["id"]].status(now) == "active"


async def test_a_shorter_grace_also_shortens_the_earlier_keys_grace(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    store = KeyStore(redis_client)
    hasher = SecretHasher(settings.keys.argon2)
    first = await issue(redis_client, settings, "svc", ["orders:read"])
    await store.rotate("svc", grace_s=3600, prefix="sk", hasher=hasher)
    assert (await call(proxy, "/v1/orders/1", key=first.key)).status == 200  # cached

    rotated_at = time.time()
    await store.rotate("svc", grace_s=60, prefix="sk", hasher=hasher)

    async def first_ends_with_the_second() -> bool:
        answer = await call(proxy, "/v1/orders/1", key=first.key)
        assert answer.status == 200
        return abs(sunset_of(answer).timestamp() - (rotated_at + 60)) <= 5

    await wait_until(first_ends_with_the_second, within=1)


# --- revocation and deletion, while cached ------------------------------------------------


async def test_revocation_reaches_a_cached_key_within_one_second(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "doomed", ["orders:read"])
    for _ in range(3):
        assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200
    assert await argon2_runs(proxy) == 1  # served from the cache (TTL 30 s)

    await KeyStore(redis_client).revoke("doomed")
    refused = await status_becomes(proxy, new.key, 401, within=1)
    assert refused.headers["WWW-Authenticate"] == INVALID_TOKEN
    await expect_event(redis_client, refused.request_id, "revoked_key")


async def test_revocation_also_ends_the_old_key_in_its_grace(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    old = await issue(redis_client, settings, "svc", ["orders:read"])
    store = KeyStore(redis_client)
    new = await store.rotate(
        "svc", grace_s=3600, prefix="sk", hasher=SecretHasher(settings.keys.argon2)
    )
    for key in (old.key, new.key):
        assert (await call(proxy, "/v1/orders/1", key=key)).status == 200

    await store.revoke("svc")
    for key in (old.key, new.key):
        await status_becomes(proxy, key, 401, within=1)


async def test_deleted_key_becomes_unknown(proxy: Proxy, redis_client: aioredis.Redis) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "temp", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200

    await KeyStore(redis_client).delete("temp")
    refused = await status_becomes(proxy, new.key, 401, within=1)
    assert refused.headers["WWW-Authenticate"] == INVALID_TOKEN
    await expect_event(redis_client, refused.request_id, "unknown_key")
    assert await KeyStore(redis_client).records() == []


# --- Redis unreachable --------------------------------------------------------------------


@pytest.fixture
async def redis_outage(redis_server: EmbeddedRedis) -> AsyncIterator[EmbeddedRedis]:
    """Yields the server for the test to `.stop()`; it runs again whatever the test did."""
    try:
        yield redis_server
    finally:
        if not redis_server.running:
            redis_server.start()


async def test_redis_down_cached_keys_keep_working_uncached_get_503(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, redis_outage: EmbeddedRedis
) -> None:
    # A short TTL, so the cached key is soon past it and only stale_if_error keeps it working.
    proxy: Proxy = await start_proxy(
        keys=keys_section(cache_ttl_s=0.2, stale_if_error_s=300), routes=ROUTES
    )
    settings = proxy.server.sidecar.settings
    cached = await issue(redis_client, settings, "cached", ["orders:read"])
    uncached = await issue(redis_client, settings, "uncached", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=cached.key)).status == 200

    redis_outage.stop()
    misses_before = metric_value(
        await metrics(proxy), "sidecar_key_cache_total", {"result": "miss"}
    )

    async def served_stale() -> bool:
        answer = await call(proxy, "/v1/orders/1", key=cached.key)
        assert answer.status == 200, answer.body  # never refused while it is in the cache
        text = await metrics(proxy)
        return metric_value(text, "sidecar_key_cache_total", {"result": "miss"}) > misses_before

    await wait_until(served_stale, within=5)
    text = await metrics(proxy)
    assert metric_value(text, "sidecar_redis_errors_total") >= 1

    for _ in range(3):
        answer = await call(proxy, "/v1/orders/1", key=uncached.key)
        assert answer.status == 503, answer.body
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.headers["Content-Type"].startswith("application/problem+json")


async def test_redis_down_without_stale_window_cached_keys_get_503(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, redis_outage: EmbeddedRedis
) -> None:
    proxy: Proxy = await start_proxy(
        keys=keys_section(cache_ttl_s=0.2, stale_if_error_s=0), routes=ROUTES
    )
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "k", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200

    redis_outage.stop()
    answer = await status_becomes(proxy, new.key, 503, within=5)
    assert int(answer.headers["Retry-After"]) >= 1


# --- the argon2 budget and parameters -----------------------------------------------------


async def test_a_thousand_requests_with_one_key_verify_it_once(
    proxy: Proxy, redis_client: aioredis.Redis, client_ssl: ssl.SSLContext
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "hot", ["orders:read"])
    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=50)
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:

        async def one() -> int:
            headers = {"Authorization": f"Bearer {new.key}"}
            async with session.get(proxy.url + "/v1/orders/1", headers=headers) as response:
                await response.read()
                return response.status

        for _ in range(20):  # 20 batches of 50 concurrent requests, the first one cold
            statuses += await asyncio.gather(*(one() for _ in range(50)))
    assert statuses == [200] * 1000
    assert await argon2_runs(proxy) == 1


async def test_hash_is_redone_when_the_argon2_parameters_change(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    stronger = {"time_cost": 2, "memory_cost": 2048, "parallelism": 1}
    proxy: Proxy = await start_proxy(keys={"argon2": stronger}, routes=ROUTES)
    store = KeyStore(redis_client)
    new = await store.create(
        name="old-params",
        scopes=["orders:read"],
        prefix="sk",
        environment="live",
        hasher=SecretHasher(Argon2(**FAST_ARGON2)),
    )
    weak_hash = new.record.hash
    assert "m=1024,t=1" in weak_hash

    assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200

    async def rehashed() -> bool:
        record = await store.fetch(new.record.key_id)
        return record is not None and record.hash != weak_hash

    await wait_until(rehashed, within=5)
    record = await store.fetch(new.record.key_id)
    assert record is not None
    assert "m=2048,t=2,p=1" in record.hash
    secret = parse_key(new.key, "sk").secret
    assert SecretHasher(Argon2(**stronger)).verify(record.hash, secret)


# --- last_used_at -------------------------------------------------------------------------


async def test_last_used_at_is_written_at_most_once_a_minute(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "used", ["orders:read"])
    store = KeyStore(redis_client)
    assert (await store.fetch(new.record.key_id)).last_used_at is None  # type: ignore[union-attr]

    used_at = time.time()
    assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200

    async def written() -> bool:
        record = await store.fetch(new.record.key_id)
        return record is not None and record.last_used_at is not None

    await wait_until(written, within=3)
    first = await store.fetch(new.record.key_id)
    assert first is not None
    assert first.last_used_at is not None
    assert abs(first.last_used_at - used_at) < 5

    writes = (await command_calls(redis_client)).get("hset", 0)
    for _ in range(20):
        assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200
    assert (await command_calls(redis_client)).get("hset", 0) == writes
    again = await store.fetch(new.record.key_id)
    assert again is not None
    assert again.last_used_at == first.last_used_at
    assert datetime.fromtimestamp(again.last_used_at, UTC) <= datetime.now(UTC)


async def test_revocation_still_reaches_the_cache_after_redis_restarts(
    proxy: Proxy, redis_client: aioredis.Redis, redis_outage: EmbeddedRedis
) -> None:
    """The invalidation feed resubscribes by itself when Redis comes back."""
    redis_outage.stop()
    redis_outage.start()  # same port, empty (the tests' Redis keeps nothing on disk)
    # A new client: the fixture's pooled connection died with the old server.
    fresh = aioredis.Redis.from_url(redis_outage.url)
    try:
        await wait_for_invalidation_listeners(fresh)
        settings = proxy.server.sidecar.settings
        new = await issue(fresh, settings, "after-restart", ["orders:read"])
        # The sidecar's own pooled connections may fail once (503) before they reconnect.
        await status_becomes(proxy, new.key, 200, within=3)

        await KeyStore(fresh).revoke("after-restart")
        await status_becomes(proxy, new.key, 401, within=1)
    finally:
        await fresh.aclose()


# --- rotation of keys that expire ---------------------------------------------------------


async def test_rotating_an_expired_key_issues_one_that_works(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    made_at = time.time() - 2 * DAY  # a one-day key, lapsed yesterday
    old = await KeyStore(redis_client, clock=lambda: made_at).create(
        name="lapsed",
        scopes=["orders:read"],
        prefix="sk",
        environment="live",
        hasher=SecretHasher(settings.keys.argon2),
        expires_at=made_at + DAY,
    )
    assert (await call(proxy, "/v1/orders/1", key=old.key)).status == 401

    new = await KeyStore(redis_client).rotate(
        "lapsed", grace_s=0, prefix="sk", hasher=SecretHasher(settings.keys.argon2)
    )
    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert answer.status == 200, answer.body


async def test_rotation_gives_the_new_key_the_old_ones_lifetime(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    """A key made for 30 days and rotated after 20 gets 30 days, not the old key's last 10."""
    settings = proxy.server.sidecar.settings
    made_at = time.time() - 20 * DAY
    await KeyStore(redis_client, clock=lambda: made_at).create(
        name="monthly",
        scopes=["orders:read"],
        prefix="sk",
        environment="live",
        hasher=SecretHasher(settings.keys.argon2),
        expires_at=made_at + 30 * DAY,
    )
    new = await KeyStore(redis_client).rotate(
        "monthly", grace_s=3600, prefix="sk", hasher=SecretHasher(settings.keys.argon2)
    )
    assert new.record.expires_at is not None
    assert new.record.expires_at == pytest.approx(time.time() + 30 * DAY, abs=60)
    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert answer.status == 200
    assert "Sunset" not in answer.headers  # 30 days away: no notice yet


async def test_stray_fields_left_on_a_deleted_key_read_as_no_key(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    """A `last_used_at` or `exposed` write racing a delete can leave a hash holding just that
    field; such a remnant must answer 401 unknown_key, not 500, and not break `keys list`."""
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "racy", ["orders:read"])
    (record_key,) = [name async for name in redis_client.scan_iter(match=f"*{new.record.key_id}")]
    await KeyStore(redis_client).delete("racy")
    await redis_client.hset(record_key, "last_used_at", repr(time.time()))

    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert answer.status == 401, answer.body
    await expect_event(redis_client, answer.request_id, "unknown_key")
    assert await KeyStore(redis_client).fetch(new.record.key_id) is None


async def test_flag_writes_never_bring_a_deleted_key_back(
    redis_client: aioredis.Redis,
) -> None:
    store = KeyStore(redis_client)
    new = await store.create(
        name="gone",
        scopes=["a:b"],
        prefix="sk",
        environment="live",
        hasher=SecretHasher(Argon2(**FAST_ARGON2)),
    )
    await store.delete("gone")
    await store.touch(new.record.key_id, time.time())
    await store.mark_exposed(new.record.key_id)
    await store.replace_hash(new.record.key_id, "x")
    assert [name async for name in redis_client.scan_iter(match=f"*{new.record.key_id}*")] == []


# --- metrics ------------------------------------------------------------------------------


async def test_keys_due_for_rotation_show_in_metrics(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    hasher = SecretHasher(Argon2(**FAST_ARGON2))
    common: dict[str, object] = {"prefix": "sk", "environment": "live", "hasher": hasher}
    old_store = KeyStore(redis_client, clock=lambda: time.time() - 400 * DAY)
    await old_store.create(name="old", scopes=["a:b"], **common)  # type: ignore[arg-type]
    await KeyStore(redis_client).create(name="new", scopes=["a:b"], **common)  # type: ignore[arg-type]
    proxy: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES)

    async def counted() -> bool:
        return metric_value(await metrics(proxy), "sidecar_keys_rotation_due") == 1

    await wait_until(counted, within=5)


async def test_cache_ttl_bounds_staleness_when_an_announcement_is_missed(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy: Proxy = await start_proxy(keys=keys_section(cache_ttl_s=0.5), routes=ROUTES)
    await wait_for_invalidation_listeners(redis_client)
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "quiet", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200

    # Revoked behind the key store's back: no pub/sub announcement, as if it had been lost.
    (record_key,) = [name async for name in redis_client.scan_iter(match=f"*{new.record.key_id}")]
    await redis_client.hset(record_key, "revoked", "1")
    refused = await status_becomes(proxy, new.key, 401, within=3)
    await expect_event(redis_client, refused.request_id, "revoked_key")
