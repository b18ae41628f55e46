"""SPEC §4: the key string is never stored, logged, audited or sent upstream.

A whole working session (create, use by both headers, rotate, revoke, a key in a URL, a wrong
secret, a mistyped key, an unknown key) and then every Redis key and value, every log line and
everything the upstream received is searched for every key and every secret."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from sidecar.keys.format import generate_key
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.store import KeyStore
from tests.authsupport import ROUTES, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import (
    issue,
    keys_section,
    read_events,
    with_one_char_changed,
    with_other_secret,
)
from tests.upstream import UpstreamServer


def needles(key: str) -> list[str]:
    """What must never appear: the key, its secret with and without the checksum, and a
    16-character piece of the secret (a truncated or reformatted copy is still a leak)."""
    secret = key.split("_")[3]
    return [key, secret, secret[:43], secret[:16], secret[20:36]]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def redis_dump(redis: aioredis.Redis) -> list[str]:
    """Every key name and every value in the database, whatever its type, as text."""
    found: list[Any] = []
    async for name in redis.scan_iter(count=500):
        found.append(name)
        kind = _text(await redis.type(name))
        if kind == "string":
            found.append(await redis.get(name))
        elif kind == "hash":
            found += [item for pair in (await redis.hgetall(name)).items() for item in pair]
        elif kind == "set":
            found += list(await redis.smembers(name))
        elif kind == "zset":
            found += list(await redis.zrange(name, 0, -1))
        elif kind == "list":
            found += list(await redis.lrange(name, 0, -1))
        elif kind == "stream":
            for entry_id, fields in await redis.xrange(name) or []:
                found.append(entry_id)
                found += [item for pair in (fields or {}).items() for item in pair]
        else:
            pytest.fail(f"unexpected Redis type {kind} for {name!r}: extend this scan")
    return [_text(value) for value in found]


@pytest.fixture
def captured_logs(
    caplog: pytest.LogCaptureFixture,
) -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog events as dicts; stdlib records (aiohttp, redis) stay in `caplog`."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        yield logs


async def test_no_key_or_secret_is_stored_logged_or_forwarded(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    captured_logs: list[MutableMapping[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy: Proxy = await start_proxy(keys=keys_section(header="x-api-key"), routes=ROUTES)
    settings = proxy.server.sidecar.settings
    store = KeyStore(redis_client)
    presented: list[str] = []  # every key string any client sent

    reader = await issue(redis_client, settings, "reader", ["orders:read"])
    writer = await issue(redis_client, settings, "writer", ["orders:*"], service="billing")
    doomed = await issue(redis_client, settings, "doomed", ["orders:read"])
    presented += [reader.key, writer.key, doomed.key]

    assert (await call(proxy, "/v1/orders/1", key=reader.key)).status == 200
    answer = await call(
        proxy,
        "/v1/orders",
        method="POST",
        headers={"X-API-Key": writer.key},
        json={"order": 1},
    )
    assert answer.status == 200
    assert (await call(proxy, "/v1/orders/1", key=doomed.key)).status == 200

    rotated = await store.rotate(
        "reader", grace_s=3600, prefix="sk", hasher=SecretHasher(settings.keys.argon2)
    )
    presented.append(rotated.key)
    assert (await call(proxy, "/v1/orders/1", key=rotated.key)).status == 200
    assert (await call(proxy, "/v1/orders/1", key=reader.key)).status == 200

    await store.revoke("doomed")
    # Revocation reaches the cache over pub/sub: within a second (SPEC §4), not at once.
    answers: list[Any] = []

    async def refused_now() -> bool:
        answers.append(await call(proxy, "/v1/orders/1", key=doomed.key))
        return bool(answers[-1].status == 401)

    await wait_until(refused_now, within=1.0)
    revoked = answers[-1]

    in_url = await call(proxy, "/v1/orders/1", params={"api_key": writer.key})
    wrong_secret = with_other_secret(rotated.key)
    mistyped = with_one_char_changed(writer.key)
    unknown = generate_key("sk", "live")[0]
    presented += [wrong_secret, mistyped, unknown]
    refused = [
        revoked,
        in_url,
        await call(proxy, "/v1/orders/1", key=wrong_secret),
        await call(proxy, "/v1/orders/1", key=mistyped),
        await call(proxy, "/v1/orders/1", headers={"X-API-Key": unknown}),
    ]
    assert [answer.status for answer in refused] == [401, 400, 401, 401, 401]

    # Let the off-path writes land: the events, and last_used_at of the keys used.
    async def settled() -> bool:
        if len(await read_events(redis_client)) < len(refused):
            return False
        records = await store.records()
        return all(record.last_used_at is not None for record in records)

    await wait_until(settled, within=5)

    forbidden = [needle for key in presented for needle in needles(key)]
    stored = await redis_dump(redis_client)
    assert len(stored) > 20  # the scan saw the records, the name index and the events
    for text in stored:
        for needle in forbidden:
            assert needle not in text, f"found in Redis: {text[:80]!r}"

    assert any(entry.get("event") == "request" for entry in captured_logs)  # capture works
    logged = [repr(entry) for entry in captured_logs]
    logged += [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    for line in logged:
        for needle in forbidden:
            assert needle not in line, f"found in a log line: {line[:200]!r}"

    assert len(upstream.seen) >= 5
    for seen in upstream.seen:
        sent = repr(seen)
        for needle in forbidden:
            assert needle not in sent, "sent upstream"
