"""SPEC §16 through real TLS on the admin port and a real Redis: who may use which port, the
scope boundary, and revocation reaching both ports within a second."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from tests.adminsupport import TEST_ACTOR, admin_events, start_admin
from tests.conftest import ProxyFactory
from tests.helpers import PROBLEM_FIELDS, wait_until
from tests.keysupport import bearer, read_events


async def test_the_admin_port_speaks_tls_with_hsts_and_no_store(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    reader = await admin.issue("ops", "sidecar:read")
    async with admin.request("GET", "/admin/v1/keys", reader.key) as response:
        assert response.status == 200
        assert response.url.scheme == "https"
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert len(response.headers["X-Request-Id"]) >= 16
        listed = await response.json()
    assert [item["name"] for item in listed["items"]] == ["ops"]
    assert "key" not in listed["items"][0]
    # Errors the router makes itself are problem+json with the same headers.
    async with admin.request("GET", "/admin/v1/nowhere", reader.key) as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        assert set(await response.json()) == PROBLEM_FIELDS
        assert "Strict-Transport-Security" in response.headers
    async with admin.request("PUT", "/admin/v1/keys", reader.key) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, POST"
        assert response.content_type == "application/problem+json"


async def test_a_proxy_key_is_refused_on_the_admin_port_as_a_failed_sign_in(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    proxy_key = await admin.issue("billing", "orders:read")
    async with admin.request("GET", "/admin/v1/keys", proxy_key.key) as response:
        assert response.status == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        request_id = response.headers["X-Request-Id"]
        assert (await response.json())["type"].endswith("not_an_admin_key")
    async with admin.request("GET", "/admin/v1/keys") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="sidecar"'
    failed = [event for event in await admin_events(redis_client) if event["request_id"]]
    assert [event["action"] for event in failed] == ["sign_in_failed", "sign_in_failed"]
    first, second = failed
    assert first["request_id"] == request_id
    assert first["detail"]["event"] == "not_an_admin_key"
    assert first["target"] == "billing"
    assert first["actor_key_id"] == proxy_key.record.key_id
    assert first["client_ip"] == "127.0.0.1"
    assert second["detail"]["event"] == "missing_key"
    raw = str(await redis_client.xrange("sidecar:admin-events"))
    assert proxy_key.key not in raw


async def test_an_admin_key_is_refused_on_the_proxy_port(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    # Holding the route's scope too: an admin key never reaches the upstream.
    both = await admin.issue("mixed", "sidecar:read", "orders:read")
    async with admin.proxy.request("GET", "/v1/orders/1", headers=bearer(both.key)) as response:
        assert response.status == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        request_id = response.headers["X-Request-Id"]
    events = [e for e in await read_events(redis_client) if e["request_id"] == request_id]
    assert [event["event"] for event in events] == ["admin_key_on_proxy"]
    assert events[0]["key_name"] == "mixed"
    assert both.key not in str(events)


async def test_a_missing_scope_is_403_naming_it_and_scopes_imply_nothing(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    reader = await admin.issue("reader", "sidecar:read")
    keeper = await admin.issue("keeper", "sidecar:keys")
    body = {"name": "new", "scopes": ["orders:read"]}
    async with admin.request("POST", "/admin/v1/keys", reader.key, json=body) as response:
        assert response.status == 403
        problem = await response.json()
        assert "sidecar:keys" in problem["detail"]
        assert response.headers["WWW-Authenticate"].endswith('scope="sidecar:keys"')
    async with admin.request("GET", "/admin/v1/keys", keeper.key) as response:
        assert response.status == 403
        assert "sidecar:read" in (await response.json())["detail"]
    assert [record.name for record in await admin.lifecycle.store.records()] == [
        "keeper",
        "reader",
    ]
    # An unknown reserved scope is refused by name, not stored.
    bad = {"name": "x", "scopes": ["sidecar:*"]}
    async with admin.request("POST", "/admin/v1/keys", keeper.key, json=bad) as response:
        assert response.status == 400
        assert (await response.json())["detail"].startswith("scopes: ")


async def test_a_key_made_by_the_api_works_at_once_and_a_revoked_one_fails_everywhere(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    keeper = await admin.issue("keeper", "sidecar:keys", "sidecar:read")
    body = {"name": "billing", "scopes": ["orders:read"]}
    async with admin.request("POST", "/admin/v1/keys", keeper.key, json=body) as response:
        assert response.status == 201
        made = await response.json()
    started = time.monotonic()

    async def proxy_answers(key: str, status: int) -> bool:
        async with admin.proxy.request("GET", "/v1/orders/1", headers=bearer(key)) as response:
            return bool(response.status == status)

    await wait_until(lambda: proxy_answers(made["key"], 200), within=1)
    assert time.monotonic() - started < 1
    # Both keys are cached now (each verified once); revocation must drop them anyway.
    async with admin.request("GET", "/admin/v1/keys", keeper.key) as response:
        assert response.status == 200
    await admin.lifecycle.revoke("billing", actor=TEST_ACTOR)
    await admin.lifecycle.revoke("keeper", actor=TEST_ACTOR)
    revoked = time.monotonic()

    async def admin_refuses() -> bool:
        async with admin.request("GET", "/admin/v1/keys", keeper.key) as response:
            return bool(response.status == 401)

    await wait_until(lambda: proxy_answers(made["key"], 401), within=1)
    await wait_until(admin_refuses, within=1)
    assert time.monotonic() - revoked < 1
