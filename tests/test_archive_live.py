"""A serving sidecar with the archive on, against the tests' real Redis and PostgreSQL: what
it answers lands in PostgreSQL once each, also across a PostgreSQL outage under load (the lag
rises, readyz says so and stays ready); with no archive configured nothing of it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from sidecar.archive.window import GROUP
from sidecar.storage.embedded_postgres import EmbeddedPostgres
from tests.archivesupport import archived_request_ids, counted, health, send_until
from tests.auditsupport import AUDIT_STREAM, send
from tests.conftest import ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import metric_value

CLIENTS = 4
LAG = ("sidecar_archive_lag_seconds", {"stream": AUDIT_STREAM})


async def test_without_an_archive_url_nothing_of_the_archive_runs(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy = await start_proxy()
    assert (await send(proxy, "GET", "/public/a")).status == 200
    groups: Any = await redis_client.xinfo_groups(AUDIT_STREAM)
    assert groups == []
    status, body, metrics = await health(proxy.session, proxy.health_url)
    assert status == 200
    assert "archive" not in body["checks"]
    assert metric_value(metrics, *LAG) == 0.0


async def test_postgres_down_under_load_then_back_loses_nothing_and_doubles_nothing(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    archive_url: str,
    postgres_outage: EmbeddedPostgres,
) -> None:
    proxy = await start_proxy(
        archive={"url": archive_url, "timeout_s": 2},
        rate_limits={"unauthenticated_per_ip": None},
    )
    answered: set[str] = set()
    stop = asyncio.Event()
    url = proxy.url + "/public/load"
    clients = [
        asyncio.create_task(send_until(proxy.session, url, answered, stop, "outage"))
        for _ in range(CLIENTS)
    ]
    try:

        async def archiving() -> bool:
            return len(await archived_request_ids(archive_url)) >= 20

        await wait_until(archiving, within=10)
        postgres_outage.stop()
        before = len(answered)

        async def reported_behind() -> bool:
            status, body, metrics = await health(proxy.session, proxy.health_url)
            assert status == 200, body  # never gating: the backlog waits in Redis
            return metric_value(metrics, *LAG) >= 1.0 and body["checks"]["archive"] != "ok"

        await wait_until(reported_behind, within=10)
        _, body, _ = await health(proxy.session, proxy.health_url)
        assert body["checks"]["archive"].startswith("behind ")
        assert "PostgreSQL unreachable" in body["checks"]["archive"]
        assert len(answered) > before + 20  # serving went on meanwhile
        postgres_outage.start()
    finally:
        stop.set()
        await asyncio.gather(*clients)

    async def drained() -> bool:
        return set(await archived_request_ids(archive_url)) >= answered

    await wait_until(drained, within=30)
    archived = await archived_request_ids(archive_url)
    assert set(archived.values()) == {1}, "a record archived twice"
    assert sum((await counted(archive_url)).values()) == sum(archived.values())

    async def caught_up() -> bool:
        _, body, metrics = await health(proxy.session, proxy.health_url)
        return body["checks"]["archive"] == "ok" and metric_value(metrics, *LAG) == 0.0

    await wait_until(caught_up, within=10)
    pending: Any = await redis_client.xpending(AUDIT_STREAM, GROUP)
    assert pending["pending"] == 0
