"""The per-minute activity counters of a sidecar without an archive: what a running sidecar
counts in Redis, that nothing is lost at shutdown or while Redis is down, and the bound."""

from __future__ import annotations

import ssl

import aiohttp
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from sidecar.archive.tables import ALLOWED as ARCHIVE_ALLOWED
from sidecar.audit.activity_counters import (
    ALLOWED,
    KEY_PREFIX,
    MAX_PENDING_MINUTES,
    ActivityCounters,
    field_name,
    parse_field,
)
from sidecar.runtime.serve import running
from sidecar.runtime.tls import check_certificate
from sidecar.storage.embedded import EmbeddedRedis
from tests.activitysupport import send_traffic
from tests.authsupport import ROUTES
from tests.conftest import Proxy, ProxyFactory, SettingsFactory
from tests.helpers import wait_until
from tests.keysupport import FAST_KEYS


async def activity(redis: aioredis.Redis, pattern: str = "[0-9]*") -> dict[str, int]:
    """Every counter of every minute (or `hour:` hash), summed: {field: n}."""
    totals: dict[str, int] = {}
    async for key in redis.scan_iter(match=KEY_PREFIX + pattern):
        for name, n in (await redis.hgetall(key)).items():
            field = name.decode() if isinstance(name, bytes) else name
            totals[field] = totals.get(field, 0) + int(n)
    return totals


def test_the_outcome_of_a_record_is_the_archives() -> None:
    assert ALLOWED == ARCHIVE_ALLOWED
    assert parse_field(field_name(None, "missing_key")) == (None, "missing_key")
    assert parse_field(field_name("3xYz", ALLOWED)) == ("3xYz", ALLOWED)


async def test_a_running_sidecar_counts_records_and_each_event_per_key(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES)
    key_id = await send_traffic(proxy, redis_client)
    expected = {
        f"{key_id}|allowed": 3,
        "-|allowed": 1,
        "-|missing_key": 2,
        f"{key_id}|invalid_secret": 1,
        f"{key_id}|missing_scope": 1,
    }

    async def flushed() -> bool:
        return await activity(redis_client) == expected

    await wait_until(flushed, within=5)  # flushed every second, not only at shutdown
    assert await activity(redis_client, "hour:*") == expected
    ttl = await redis_client.ttl(next(iter(await redis_client.keys(KEY_PREFIX + "[0-9]*"))))
    assert 89 * 86_400 < ttl <= 90 * 86_400 + 60  # audit.retention_days, from its minute
    ttl = await redis_client.ttl(next(iter(await redis_client.keys(KEY_PREFIX + "hour:*"))))
    assert 89 * 86_400 < ttl <= 90 * 86_400 + 3600  # … and from its hour


async def test_the_last_counts_are_flushed_at_shutdown(
    make_settings: SettingsFactory, client_ssl: ssl.SSLContext, redis_client: aioredis.Redis
) -> None:
    settings = make_settings()
    async with running(settings, check_certificate(settings.tls)) as server:
        connector = aiohttp.TCPConnector(ssl=client_ssl)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://localhost:{server.proxy_port}/public/last"
            async with session.get(url) as response:
                assert response.status == 200
    # The serving process is gone: only its final flush can have written this.
    assert await activity(redis_client) == {"-|allowed": 1}


async def test_counts_wait_in_memory_while_redis_is_down(
    redis_outage: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    counters = ActivityCounters(redis_client, 1)
    counters.count("k1", ALLOWED)
    counters.count(None, "missing_key")
    redis_outage.stop()
    assert not await counters.flush()
    counters.count("k1", ALLOWED)
    assert counters.pending == 3
    redis_outage.start()
    assert await counters.flush()
    assert counters.pending == 0
    assert await activity(redis_client) == {"k1|allowed": 2, "-|missing_key": 1}


async def test_past_a_day_of_minutes_the_oldest_is_dropped_with_a_warning(
    redis_client: aioredis.Redis,
) -> None:
    now = [1_800_000_000.0]
    counters = ActivityCounters(redis_client, 1, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(MAX_PENDING_MINUTES + 1):
            counters.count("k1", ALLOWED)
            now[0] += 60
    assert counters.pending == MAX_PENDING_MINUTES
    assert [entry["minute"] for entry in logs if entry["log_level"] == "warning"] == [
        1_800_000_000 // 60
    ]
