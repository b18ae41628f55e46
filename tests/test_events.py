"""SPEC §8: every rejection of the authentication layer is written to the events stream, with
the documented fields, the key's public id and name where known, and never the key itself."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.keys.format import generate_key
from sidecar.keys.store import KeyStore
from tests.authsupport import ROUTES, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import (
    FAST_KEYS,
    issue,
    metric_value,
    read_events,
    with_one_char_changed,
    with_other_secret,
)

FIELDS = {"v", "ts", "event", "request_id", "method", "path", "client_ip", "detail"}
CHAIN = {"writer", "seq", "prev"}  # SPEC §17, and "mac" when an integrity key is set
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
STREAM = "test:auth-events"


@dataclass
class Expected:
    event: str
    method: str
    path: str
    key_id: str | None = None
    key_name: str | None = None
    presented: list[str] = field(default_factory=list)  # must appear nowhere in the event


@pytest.fixture
async def proxy(start_proxy: ProxyFactory, redis_client: aioredis.Redis) -> Proxy:
    started: Proxy = await start_proxy(
        keys=FAST_KEYS,
        routes=ROUTES,
        rate_limits={"per_key": {"requests": 2, "per_seconds": 60}},
        audit={"events_stream": STREAM},
    )
    return started


async def test_every_rejection_writes_one_event(proxy: Proxy, redis_client: aioredis.Redis) -> None:
    settings = proxy.server.sidecar.settings
    store = KeyStore(redis_client)
    good = await issue(redis_client, settings, "good", ["orders:read"])
    expired = await issue(
        redis_client, settings, "expired", ["orders:read"], expires_at=time.time() - 1
    )
    revoked = await issue(redis_client, settings, "revoked", ["orders:read"])
    await store.revoke("revoked")
    fenced = await issue(
        redis_client, settings, "fenced", ["orders:read"], allow_ips=["192.0.2.0/24"]
    )
    busy = await issue(redis_client, settings, "busy", ["orders:read"])
    staging = await issue(redis_client, settings, "stg", ["orders:read"], environment="staging")
    unknown = generate_key("sk", "live")[0]
    wrong_secret = with_other_secret(good.key)
    bad_checksum = with_one_char_changed(good.key)
    leaked = await issue(redis_client, settings, "leaked", ["orders:read"])

    expected: dict[str, Expected] = {}

    async def reject(
        path: str, want: Expected, *, key: str | None = None, method: str = "GET", **kw: Any
    ) -> None:
        answer = await call(proxy, path, key=key, method=method, **kw)
        assert answer.status in (400, 401, 403, 429), (want.event, answer.body)
        expected[answer.request_id] = want

    await reject("/v1/orders/1", Expected("missing_key", "GET", "/v1/orders/1"))
    await reject(
        "/v1/orders/2",
        Expected("malformed_key", "GET", "/v1/orders/2", presented=[bad_checksum]),
        key=bad_checksum,
    )
    await reject(
        "/v1/orders/3",
        Expected("unknown_key", "GET", "/v1/orders/3", unknown.split("_")[2], None, [unknown]),
        key=unknown,
    )
    await reject(
        "/v1/orders/4",
        Expected("invalid_secret", "GET", "/v1/orders/4", good.record.key_id, None, [wrong_secret]),
        key=wrong_secret,
    )
    await reject(
        "/v1/orders/5",
        Expected("expired_key", "GET", "/v1/orders/5", expired.record.key_id, "expired"),
        key=expired.key,
    )
    await reject(
        "/v1/orders/6",
        Expected("revoked_key", "GET", "/v1/orders/6", revoked.record.key_id, "revoked"),
        key=revoked.key,
    )
    await reject(
        "/v1/orders/7",
        Expected("wrong_environment", "GET", "/v1/orders/7", staging.record.key_id),
        key=staging.key,
    )
    await reject(
        "/v1/orders/8",
        Expected("ip_not_allowed", "GET", "/v1/orders/8", fenced.record.key_id, "fenced"),
        key=fenced.key,
    )
    await reject(
        "/v1/orders",
        Expected("key_in_url", "POST", "/v1/orders", leaked.record.key_id),
        method="POST",
        params={"key": leaked.key},
    )
    await reject(
        "/v1/orders",
        Expected("missing_scope", "POST", "/v1/orders", good.record.key_id, "good"),
        key=good.key,
        method="POST",
    )
    await reject(
        "/v9/nowhere",
        Expected("no_route", "DELETE", "/v9/nowhere"),
        key=good.key,
        method="DELETE",
    )
    for _ in range(2):
        assert (await call(proxy, "/v1/orders/9", key=busy.key)).status == 200
    await reject(
        "/v1/orders/9",
        Expected("rate_limited", "GET", "/v1/orders/9", busy.record.key_id, "busy"),
        key=busy.key,
    )

    async def all_written() -> bool:
        return len(await read_events(redis_client, STREAM)) >= len(expected)

    await wait_until(all_written, within=5)
    events = await read_events(redis_client, STREAM)
    assert len(events) == len(expected)  # one per rejection, none for the 200s
    assert await redis_client.exists("sidecar:auth-events") == 0  # the configured stream only

    every_secret = [
        key.split("_")[3]
        for key in (
            good.key, expired.key, revoked.key, fenced.key, busy.key, staging.key,
            leaked.key, unknown, wrong_secret, bad_checksum,
        )
    ]  # fmt: skip
    now = datetime.now(UTC)
    for event in events:
        want = expected[event["request_id"]]
        assert event["event"] == want.event
        optional = {name for name in ("key_id", "key_name", "mac") if name in event}
        assert set(event) == FIELDS | CHAIN | optional, event
        assert event["v"] == 1
        assert TIMESTAMP.match(event["ts"]), event["ts"]
        moment = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((now - moment).total_seconds()) < 30
        assert event["method"] == want.method
        assert event["path"] == want.path
        assert event["client_ip"] == "127.0.0.1"
        assert isinstance(event["detail"], str)
        assert event["detail"]
        assert event.get("key_id") == want.key_id, event
        if want.key_name is not None:
            assert event.get("key_name") == want.key_name, event
        text = repr(event)
        for secret in every_secret:
            assert secret not in text, event
            assert secret[:16] not in text, event
        for presented in want.presented:
            assert presented not in text

    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        text = await response.text()
    for want in expected.values():
        assert metric_value(text, "sidecar_auth_events_total", {"event": want.event}) >= 1


async def test_events_older_than_retention_are_trimmed_at_start_up(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    old_ms = int((time.time() - 91 * 86400) * 1000)
    await redis_client.xadd(STREAM, {"event": b"{}"}, id=f"{old_ms}-0")
    recent = await redis_client.xadd(STREAM, {"event": b"{}"})

    await start_proxy(keys=FAST_KEYS, routes=ROUTES, audit={"events_stream": STREAM})

    async def trimmed() -> bool:
        ids = [entry_id for entry_id, _ in await redis_client.xrange(STREAM) or []]
        return ids == [recent]

    await wait_until(trimmed, within=5)
