"""SPEC §4 (cache, stale_if_error) and §7 (spool) while the sidecar's Redis goes away and comes
back, or stalls: cached keys keep working, uncached keys get 503 with Retry-After (never 200),
audit records spool and are replayed, and everything recovers without a restart.

Each test runs its own `redis-server` (`own_redis`): it is stopped, snapshotted or paused, and
must not take the session's shared server with it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from sidecar.storage.embedded import EmbeddedRedis
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import bearer, issue, keys_section, metric_value
from tests.keysupport import wait_for_invalidation_listeners as listeners_subscribed
from tests.upstream import UpstreamServer

ROUTES = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/orders/**", "scopes": ["orders:read"]},
]
AUDIT_STREAM = "sidecar:audit"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
REDIS_TIMEOUT_S = 0.3


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    seconds: float
    request_id: str


async def call(proxy: Proxy, path: str, key: str | None = None) -> Answer:
    request_id = f"fault-{uuid.uuid4().hex}"
    headers = {"X-Request-Id": request_id, **(bearer(key) if key else {})}
    started = time.monotonic()
    async with proxy.request("GET", path, headers=headers, timeout=REQUEST_TIMEOUT) as response:
        await response.read()
        return Answer(
            response.status, dict(response.headers), time.monotonic() - started, request_id
        )


async def metric(proxy: Proxy, name: str, labels: dict[str, str] | None = None) -> float:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        return metric_value(await response.text(), name, labels)


async def audit_count(proxy: Proxy, outcome: str) -> float:
    return await metric(proxy, "sidecar_audit_records_total", {"outcome": outcome})


async def readiness(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    async with proxy.session.get(proxy.health_url + "/readyz") as response:
        return response.status, await response.json()


async def audited_ids(redis: aioredis.Redis) -> Counter[str]:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return Counter(json.loads(fields[b"record"])["request_id"] for _id, fields in entries)


def assert_unavailable(answer: Answer) -> None:
    assert answer.status == 503, answer
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["Content-Type"].startswith("application/problem+json")


async def test_redis_going_away_and_coming_back(
    own_redis: EmbeddedRedis,
    own_redis_client: aioredis.Redis,
    start_proxy: ProxyFactory,  # after own_redis: the sidecar stops before its Redis does
    upstream: UpstreamServer,
) -> None:
    # A short TTL: during the outage the cached key is past it and stale_if_error alone
    # keeps it working.
    proxy: Proxy = await start_proxy(
        redis={"url": own_redis.url, "timeout_s": REDIS_TIMEOUT_S},
        keys=keys_section(cache_ttl_s=0.2, stale_if_error_s=300),
        routes=ROUTES,
    )
    await listeners_subscribed(own_redis_client)  # its first subscription clears the cache
    settings = proxy.server.sidecar.settings
    cached = await issue(own_redis_client, settings, "cached", ["orders:read"])
    uncached = await issue(own_redis_client, settings, "uncached", ["orders:read"])
    warm = await call(proxy, "/v1/orders/warm", cached.key)
    assert warm.status == 200

    async def warm_written() -> bool:
        return warm.request_id in await audited_ids(own_redis_client)

    await wait_until(warm_written, within=5)
    spooled_before = await audit_count(proxy, "spooled")

    # A restart that keeps the data (the keys must exist when it is back): snapshot, stop.
    await own_redis_client.save()
    await asyncio.to_thread(own_redis.stop)

    # 1. The cached key, past its TTL, is served from the stale window: 200, every time.
    misses_before = await metric(proxy, "sidecar_key_cache_total", {"result": "miss"})
    during: list[str] = []

    async def served_stale() -> bool:
        answer = await call(proxy, "/v1/orders/stale", cached.key)
        assert answer.status == 200, answer  # never refused while it is in the cache
        during.append(answer.request_id)
        misses = await metric(proxy, "sidecar_key_cache_total", {"result": "miss"})
        return misses > misses_before

    await wait_until(served_stale, within=5)

    # 2. The uncached key cannot be verified: 503 with Retry-After, never 200, never forwarded.
    forwarded = len(upstream.seen)
    for _ in range(3):
        assert_unavailable(await call(proxy, "/v1/orders/uncached", uncached.key))
    assert len(upstream.seen) == forwarded

    # 3. What was served is audited on disk meanwhile.
    for n in range(5):
        answer = await call(proxy, f"/public/outage/{n}")
        assert answer.status == 200
        during.append(answer.request_id)

    async def all_spooled() -> bool:
        return await audit_count(proxy, "spooled") >= spooled_before + len(during)

    await wait_until(all_spooled, within=10)
    status, body = await readiness(proxy)
    assert status == 503
    assert "redis" in body["failing"]

    # 4. Redis is back (same port, same data): all recovers, without a restart.
    replayed_before = await audit_count(proxy, "replayed")
    await asyncio.to_thread(own_redis.start)

    async def uncached_works() -> bool:
        answer = await call(proxy, "/v1/orders/uncached", uncached.key)
        assert answer.status in (200, 503), answer  # 401 would mean the key store was lost
        return answer.status == 200

    await wait_until(uncached_works, within=10)
    assert (await call(proxy, "/v1/orders/cached", cached.key)).status == 200

    async def replayed() -> bool:
        found = await audited_ids(own_redis_client)
        return all(request_id in found for request_id in during)

    await wait_until(replayed, within=10)
    found = await audited_ids(own_redis_client)
    assert all(found[request_id] == 1 for request_id in during), found
    assert await audit_count(proxy, "replayed") >= replayed_before + len(during)

    async def ready() -> bool:
        return (await readiness(proxy))[0] == 200

    await wait_until(ready, within=5)


async def test_a_stalled_redis_costs_redis_timeout_not_a_hang(
    own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, start_proxy: ProxyFactory
) -> None:
    proxy: Proxy = await start_proxy(
        redis={"url": own_redis.url, "timeout_s": REDIS_TIMEOUT_S},
        keys=keys_section(),
        routes=ROUTES,
    )
    await listeners_subscribed(own_redis_client)
    settings = proxy.server.sidecar.settings
    cached = await issue(own_redis_client, settings, "cached", ["orders:read"])
    uncached = await issue(own_redis_client, settings, "uncached", ["orders:read"])
    assert (await call(proxy, "/v1/orders/warm", cached.key)).status == 200

    pause_s = 3.0
    paused_at = time.monotonic()
    # From a client of its own: every other client's commands now wait in Redis, unanswered.
    assert await own_redis_client.client_pause(int(pause_s * 1000), all=True)

    slow = await call(proxy, "/v1/orders/uncached", uncached.key)
    assert_unavailable(slow)
    assert slow.seconds < 2.0, f"the uncached key waited {slow.seconds:.2f}s on a stalled Redis"

    served: list[str] = []
    for _ in range(3):
        fast = await call(proxy, "/v1/orders/cached", cached.key)
        assert fast.status == 200
        assert fast.seconds < 1.0, f"the cached key waited {fast.seconds:.2f}s on a stalled Redis"
        served.append(fast.request_id)
    # All these answers came while Redis was paused, or the test proved nothing.
    assert time.monotonic() - paused_at < pause_s

    async def uncached_works() -> bool:
        answer = await call(proxy, "/v1/orders/uncached", uncached.key)
        assert answer.status in (200, 503), answer
        return answer.status == 200

    await wait_until(uncached_works, within=pause_s + 5)
    assert time.monotonic() - paused_at >= pause_s - 0.1  # not before the pause was over

    # The records of the stall: their writes timed out and went to the spool; once Redis
    # resumes, each is replayed into the stream, exactly once.
    async def all_audited() -> bool:
        found = await audited_ids(own_redis_client)
        return all(request_id in found for request_id in served)

    await wait_until(all_audited, within=10)
    found = await audited_ids(own_redis_client)
    assert [found[request_id] for request_id in served] == [1] * len(served), found
    assert await audit_count(proxy, "spooled") >= 1  # the stall did make writes fail
