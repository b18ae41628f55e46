"""SPEC §4 to §6 through the proxy: one test per authentication row of the §6 table, scopes,
rate limits, and what reaches the upstream. Real TLS, real Redis, keys made at run time."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.keys.format import generate_key
from sidecar.keys.store import KeyStore
from tests.authsupport import EXPIRED, INVALID_TOKEN, ROUTES, Answer, call, expect_event
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import PROBLEM_FIELDS
from tests.keysupport import (
    FAST_KEYS,
    command_calls,
    issue,
    keys_section,
    with_one_char_changed,
    with_other_secret,
)
from tests.upstream import UpstreamServer

# Redis commands of the key look-up path (the failed-auth peek: PTTL; the record: HGETALL;
# flags and last_used_at: EXISTS, HSET): none may run for a key refused on its shape. GET and
# EVALSHA are not in the list: the events writer uses them to record the refusal itself.
LOOKUP_COMMANDS = ("hgetall", "pttl", "exists", "hset")


def assert_problem(answer: Answer, status: int) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert set(answer.body) == PROBLEM_FIELDS
    assert answer.body["status"] == status
    assert answer.body["request_id"] == answer.request_id


@pytest.fixture
async def proxy(start_proxy: ProxyFactory, redis_client: aioredis.Redis) -> Proxy:
    """A sidecar with the tests' routes; `redis_client` first, so Redis starts empty."""
    started: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES)
    return started


# --- §6, one row at a time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}],
    ids=["no-header", "basic-scheme", "empty-bearer"],
)
async def test_missing_key(
    proxy: Proxy,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    headers: dict[str, str],
) -> None:
    answer = await call(proxy, "/v1/orders/1", headers=headers)
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="sidecar"'
    await expect_event(redis_client, answer.request_id, "missing_key")
    assert upstream.seen == []


@pytest.mark.parametrize("defect", ["garbage", "bad-checksum", "wrong-prefix", "truncated"])
async def test_malformed_key_is_refused_without_touching_redis(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer, defect: str
) -> None:
    settings = proxy.server.sidecar.settings
    real = (await issue(redis_client, settings, "real", ["orders:read"])).key
    presented = {
        "garbage": "not-an-api-key",
        "bad-checksum": with_one_char_changed(real),
        "wrong-prefix": generate_key("pk", "live")[0],
        "truncated": real[:-1],
    }[defect]
    before = await command_calls(redis_client)
    answer = await call(proxy, "/v1/orders/1", key=presented)
    after = await command_calls(redis_client)

    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == INVALID_TOKEN
    for command in LOOKUP_COMMANDS:
        assert after.get(command, 0) == before.get(command, 0), command
    await expect_event(redis_client, answer.request_id, "malformed_key")
    assert upstream.seen == []

    # The control: a well-formed key is looked up, and the counters show it.
    assert (await call(proxy, "/v1/orders/1", key=real)).status == 200
    looked_up = await command_calls(redis_client)
    assert looked_up["hgetall"] > after.get("hgetall", 0)
    assert looked_up["pttl"] > after.get("pttl", 0)


async def test_unknown_key_and_wrong_secret_answer_alike(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    real = (await issue(redis_client, settings, "real", ["orders:read"])).key
    unknown, _ = generate_key("sk", "live")

    for_unknown = await call(proxy, "/v1/orders/1", key=unknown)
    for_wrong_secret = await call(proxy, "/v1/orders/1", key=with_other_secret(real))

    for answer in (for_unknown, for_wrong_secret):
        assert_problem(answer, 401)
        assert answer.headers["WWW-Authenticate"] == INVALID_TOKEN
    # No enumeration: nothing but the request id tells the two apart.
    del for_unknown.body["request_id"], for_wrong_secret.body["request_id"]
    assert for_unknown.body == for_wrong_secret.body
    await expect_event(redis_client, for_unknown.request_id, "unknown_key")
    await expect_event(redis_client, for_wrong_secret.request_id, "invalid_secret")
    assert upstream.seen == []
    assert (await call(proxy, "/v1/orders/1", key=real)).status == 200


async def test_wrong_secret_does_not_learn_that_a_key_is_revoked(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    real = (await issue(redis_client, settings, "gone", ["orders:read"])).key
    await KeyStore(redis_client).revoke("gone")
    unknown = await call(proxy, "/v1/orders/1", key=generate_key("sk", "live")[0])
    guess = await call(proxy, "/v1/orders/1", key=with_other_secret(real))
    assert guess.status == unknown.status == 401
    assert guess.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]
    assert guess.body["detail"] == unknown.body["detail"]
    await expect_event(redis_client, guess.request_id, "invalid_secret")


async def test_expired_key(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "old", ["orders:read"], expires_at=time.time() - 10)
    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == EXPIRED
    event = await expect_event(redis_client, answer.request_id, "expired_key")
    assert event["key_name"] == "old"
    assert upstream.seen == []


async def test_revoked_key(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "revoked", ["orders:read"])
    assert await KeyStore(redis_client).revoke("revoked") == [new.record.key_id]
    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == INVALID_TOKEN
    await expect_event(redis_client, answer.request_id, "revoked_key")
    assert upstream.seen == []


async def test_wrong_environment(
    proxy: Proxy,
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
) -> None:
    settings = proxy.server.sidecar.settings
    staging = (
        await issue(redis_client, settings, "stg", ["orders:read"], environment="staging")
    ).key
    assert staging.startswith("sk_staging_")

    answer = await call(proxy, "/v1/orders/1", key=staging)
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == INVALID_TOKEN
    await expect_event(redis_client, answer.request_id, "wrong_environment")
    assert upstream.seen == []

    # The key itself is good: a staging sidecar on the same Redis takes it.
    staging_proxy: Proxy = await start_proxy(
        keys=keys_section(environment="staging"), routes=ROUTES
    )
    assert (await call(staging_proxy, "/v1/orders/1", key=staging)).status == 200


async def test_ip_not_allowed(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    elsewhere = await issue(
        redis_client, settings, "elsewhere", ["orders:read"], allow_ips=["10.0.0.0/8"]
    )
    here = await issue(
        redis_client,
        settings,
        "here",
        ["orders:read"],
        allow_ips=["10.0.0.0/8", "127.0.0.0/8"],
    )

    refused = await call(proxy, "/v1/orders/1", key=elsewhere.key)
    assert_problem(refused, 401)
    assert refused.headers["WWW-Authenticate"] == INVALID_TOKEN
    event = await expect_event(redis_client, refused.request_id, "ip_not_allowed")
    assert event["client_ip"] == "127.0.0.1"
    assert upstream.seen == []

    assert (await call(proxy, "/v1/orders/1", key=here.key)).status == 200


@pytest.mark.parametrize("path", ["/v1/orders/1", "/public/page"])
async def test_key_in_url_is_refused_and_flags_the_key_exposed(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer, path: str
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "leaky", ["orders:read"])
    store = KeyStore(redis_client)
    before = await store.fetch(new.record.key_id)
    assert before is not None
    assert not before.exposed

    answer = await call(proxy, path, key=new.key, params={"api_key": new.key, "a": "1"})
    assert_problem(answer, 400)
    after = await store.fetch(new.record.key_id)
    assert after is not None
    assert after.exposed
    event = await expect_event(redis_client, answer.request_id, "key_in_url")
    assert event["key_id"] == new.record.key_id
    assert upstream.seen == []


async def test_missing_scope(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    reader = await issue(redis_client, settings, "reader", ["orders:read"])
    answer = await call(proxy, "/v1/orders", key=reader.key, method="POST", json={"a": 1})
    assert_problem(answer, 403)
    assert answer.headers["WWW-Authenticate"] == (
        'Bearer realm="sidecar", error="insufficient_scope", scope="orders:write"'
    )
    event = await expect_event(redis_client, answer.request_id, "missing_scope")
    assert event["key_name"] == "reader"
    assert upstream.seen == []


async def test_no_route_with_default_deny(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    everything = await issue(redis_client, settings, "all", ["*"])
    answer = await call(proxy, "/v2/unrouted", key=everything.key)
    assert_problem(answer, 403)
    assert "WWW-Authenticate" not in answer.headers
    await expect_event(redis_client, answer.request_id, "no_route")
    assert upstream.seen == []


async def test_rate_limited_per_key(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(
        keys=FAST_KEYS,
        routes=ROUTES,
        rate_limits={"per_key": {"requests": 3, "per_seconds": 60}},
    )
    settings = proxy.server.sidecar.settings
    busy = await issue(redis_client, settings, "busy", ["orders:read"])
    other = await issue(redis_client, settings, "other", ["orders:read"])

    for _ in range(3):
        assert (await call(proxy, "/v1/orders/1", key=busy.key)).status == 200
    limited = await call(proxy, "/v1/orders/1", key=busy.key)
    assert_problem(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["RateLimit-Limit"] == "3"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(limited.headers["RateLimit-Reset"]) <= 60
    event = await expect_event(redis_client, limited.request_id, "rate_limited")
    assert event["key_name"] == "busy"
    assert len(upstream.seen) == 3
    # The limit is per key: another key is unaffected.
    assert (await call(proxy, "/v1/orders/1", key=other.key)).status == 200


async def test_failed_auth_per_ip(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(
        keys=FAST_KEYS,
        routes=ROUTES,
        rate_limits={"failed_auth_per_ip": {"requests": 3, "per_seconds": 60}},
    )
    settings = proxy.server.sidecar.settings
    good = await issue(redis_client, settings, "good", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=good.key)).status == 200  # now cached

    for _ in range(3):
        guess = await call(proxy, "/v1/orders/1", key=generate_key("sk", "live")[0])
        assert guess.status == 401
    blocked = await call(proxy, "/v1/orders/1", key=generate_key("sk", "live")[0])
    assert_problem(blocked, 429)
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert blocked.headers["RateLimit-Limit"] == "3"
    await expect_event(redis_client, blocked.request_id, "rate_limited")

    # The guesser's address is blocked, but a key it verified before still works.
    assert (await call(proxy, "/v1/orders/1", key=good.key)).status == 200
    assert len(upstream.seen) == 2


# --- where keys come from and what the upstream sees --------------------------------------


async def test_key_from_the_configured_header(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(keys=keys_section(header="x-api-key"), routes=ROUTES)
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "hdr", ["orders:read"])

    answer = await call(proxy, "/v1/orders/1", headers={"X-API-Key": new.key, "X-Kept": "1"})
    assert answer.status == 200
    seen = upstream.seen[-1].headers
    assert seen["X-Kept"] == "1"
    assert "X-API-Key" not in seen
    assert "Authorization" not in seen
    assert seen["X-Sidecar-Key-Name"] == "hdr"

    # Bearer keeps working beside the header; without either, the key is missing.
    assert (await call(proxy, "/v1/orders/1", key=new.key)).status == 200
    assert (await call(proxy, "/v1/orders/1", headers={"X-Other": "1"})).status == 401
    # SPEC §14: a key in any other header is refused, not ignored (it would be forwarded).
    assert (await call(proxy, "/v1/orders/1", headers={"X-Other": new.key})).status == 400


async def test_credentials_are_not_forwarded_and_identity_headers_are(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "billing", ["orders:read", "orders:write"])
    forged = {
        "X-Sidecar-Key-Name": "admin",
        "X-Sidecar-Key-Id": "forged",
        "X-Sidecar-Scopes": "*",
        "X-Kept": "1",
    }
    answer = await call(proxy, "/v1/orders/1", key=new.key, headers=forged)
    assert answer.status == 200
    seen = upstream.seen[-1].headers
    assert seen["X-Kept"] == "1"
    assert "Authorization" not in seen
    assert seen.getall("X-Sidecar-Key-Name") == ["billing"]
    assert seen.getall("X-Sidecar-Key-Id") == [new.record.key_id]
    assert seen.getall("X-Sidecar-Scopes") == ["orders:read orders:write"]
    assert new.key not in str(upstream.seen[-1])


async def test_public_route_drops_client_identity_headers(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    forged = {"X-Sidecar-Key-Name": "admin", "X-Sidecar-Key-Id": "x", "X-Sidecar-Scopes": "*"}
    answer = await call(proxy, "/public/page", headers=forged)
    assert answer.status == 200
    seen = upstream.seen[-1].headers
    for name in forged:
        assert name not in seen, name


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["orders:*"], {"GET /v1/orders/1", "POST /v1/orders"}),
        (["*"], {"GET /v1/orders/1", "POST /v1/orders", "GET /v1/admin/users"}),
        (["orders:read"], {"GET /v1/orders/1"}),
        (["admin:*", "orders:write"], {"POST /v1/orders", "GET /v1/admin/users"}),
        (["orders-archive:*"], set()),
    ],
)
async def test_scope_wildcards(
    proxy: Proxy, redis_client: aioredis.Redis, scopes: list[str], allowed: set[str]
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "scoped", scopes)
    for request in ("GET /v1/orders/1", "POST /v1/orders", "GET /v1/admin/users"):
        method, path = request.split()
        answer = await call(proxy, path, key=new.key, method=method)
        assert answer.status == (200 if request in allowed else 403), (request, answer.body)


async def test_default_route_authenticated(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES, default_route="authenticated")
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "anyone", ["orders:read"])

    assert (await call(proxy, "/v2/unrouted", key=new.key)).status == 200
    assert upstream.seen[-1].headers["X-Sidecar-Key-Name"] == "anyone"
    assert (await call(proxy, "/v2/unrouted")).status == 401
    assert (await call(proxy, "/v2/unrouted", key="sk_live_nope")).status == 401
    # Configured routes still demand their scopes.
    assert (await call(proxy, "/v1/admin/users", key=new.key)).status == 403


async def test_an_internal_error_answers_a_consistent_500(
    proxy: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    settings = proxy.server.sidecar.settings
    new = await issue(redis_client, settings, "corrupt", ["orders:read"])
    (record_key,) = [name async for name in redis_client.scan_iter(match=f"*{new.record.key_id}")]
    await redis_client.hset(record_key, "scopes", "{not json")  # a record damaged by hand

    answer = await call(proxy, "/v1/orders/1", key=new.key)
    assert answer.status == 500
    assert upstream.seen == []
    assert_problem(answer, 500)
    assert answer.body["title"] != "Bad request"


async def test_per_key_rate_limit_is_shared_across_replicas(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    sections: dict[str, Any] = {
        "keys": FAST_KEYS,
        "routes": ROUTES,
        "rate_limits": {"per_key": {"requests": 3, "per_seconds": 60}},
    }
    first: Proxy = await start_proxy(**sections)
    second: Proxy = await start_proxy(**sections)
    new = await issue(redis_client, first.server.sidecar.settings, "shared", ["orders:read"])

    statuses = [
        (await call(replica, "/v1/orders/1", key=new.key)).status
        for replica in (first, second, first, second)
    ]
    assert statuses == [200, 200, 200, 429]
