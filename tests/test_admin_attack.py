"""An outsider's attacks on the admin listener (SPEC §16, with §6/§12/§14 where they apply),
each one a finding turned into a test: real TLS on loopback, a real Redis, no mocks."""

from __future__ import annotations

import base64
import logging
import ssl
import time

import pytest
import redis.asyncio as aioredis

from tests.adminsupport import start_admin
from tests.conftest import ProxyFactory
from tests.helpers import raw_tls_exchange


async def test_a_malformed_head_on_the_admin_port_never_echoes_the_key(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    client_ssl: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiohttp's stock protocol quoted the bad header line (the admin key) in its 400 page and
    # its error log, and sent that page without HSTS.
    admin = await start_admin(start_proxy)
    key = (await admin.issue("ops", "sidecar:read")).key
    port = admin.proxy.server.admin_port
    assert port is not None
    caplog.set_level(logging.DEBUG)
    head = (
        b"GET /admin/v1/keys HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Bearer " + key.encode() + b"\x01\r\n\r\n"
    )
    answer = await raw_tls_exchange(port, head, client_ssl)
    assert answer.raw.startswith(b"HTTP/1.")
    assert b" 400 " in answer.raw.split(b"\r\n", 1)[0]
    assert key.encode() not in answer.raw
    assert b"Strict-Transport-Security" in answer.raw
    assert b"Cache-Control: no-store" in answer.raw
    assert all(key not in record.getMessage() for record in caplog.records)
    assert key not in caplog.text


async def test_a_head_that_never_completes_is_cut_off_on_the_admin_port(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, client_ssl: ssl.SSLContext
) -> None:
    # Slowloris: the admin listener waited forever for the rest of a request head.
    admin = await start_admin(start_proxy, limits={"header_timeout_s": 0.5})
    port = admin.proxy.server.admin_port
    assert port is not None
    started = time.monotonic()
    answer = await raw_tls_exchange(
        port, b"GET /admin/v1/openapi.json HTTP/1.1\r\nHost: x\r\n", client_ssl, within=5
    )
    assert answer.closed, "the admin port kept a never-finished head open"
    assert time.monotonic() - started < 4


async def test_a_keys_key_grants_and_rotates_only_reserved_scopes_it_holds(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    # Privilege escalation: `sidecar:keys` alone minted a `sidecar:audit` key (decrypted
    # bodies) and rotated the full admin key into its own hands.
    admin = await start_admin(start_proxy)
    keeper = (await admin.issue("keeper", "sidecar:keys")).key
    await admin.issue("root", "sidecar:read", "sidecar:keys", "sidecar:audit")
    refused = {"name": "mine", "scopes": ["sidecar:keys", "sidecar:audit"]}
    async with admin.request("POST", "/admin/v1/keys", keeper, json=refused) as response:
        assert response.status == 403
        assert "sidecar:audit" in (await response.json())["detail"]
    async with admin.request("POST", "/admin/v1/keys/root/rotate", keeper, json={}) as response:
        assert response.status == 403
        assert "key" not in await response.json()
    for name, scopes in (("peer", ["sidecar:keys"]), ("app", ["*"])):
        body = {"name": name, "scopes": scopes}
        async with admin.request("POST", "/admin/v1/keys", keeper, json=body) as response:
            assert response.status == 201
    async with admin.request("POST", "/admin/v1/keys/app/rotate", keeper, json={}) as response:
        assert response.status == 201
    assert {record.name for record in await admin.lifecycle.store.records()} == {
        "keeper",
        "root",
        "peer",
        "app",
    }


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["events", "audit", "admin-events"])
async def test_forged_cursors_and_out_of_range_times_are_400_not_500(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, path: str
) -> None:
    admin = await start_admin(start_proxy)
    reader = (await admin.issue("ops", "sidecar:read")).key
    forged = ["0-0", "9223372036854775808-0", "1-18446744073709551616", "9" * 20 + "-" + "9" * 20]
    queries = [f"cursor={_cursor(raw)}" for raw in forged] + [
        "since=0001-01-01T00:00:00Z",
        "until=9999-12-31T23:59:59Z",
    ]
    for query in queries:
        async with admin.request("GET", f"/admin/v1/{path}?{query}", reader) as response:
            assert response.status == 400, query
            assert (await response.json())["detail"].split(":")[0] in {"cursor", "since", "until"}
    async with admin.request("GET", f"/admin/v1/{path}?cursor={_cursor('1-1')}", reader) as ok:
        assert ok.status == 200


async def test_a_key_string_in_a_key_path_is_not_echoed(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    reader = (await admin.issue("ops", "sidecar:read")).key
    for target in (reader, "a" * 5000, "caf\u00e9"):
        async with admin.request("GET", f"/admin/v1/keys/{target}", reader) as response:
            assert response.status == 404
            assert target not in await response.text()


async def test_a_body_field_given_twice_is_refused(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    keeper = (await admin.issue("keeper", "sidecar:keys")).key
    body = '{"name": "twice", "scopes": ["sidecar:keys"], "scopes": ["orders:read"]}'
    headers = {"Content-Type": "application/json"}
    async with admin.request(
        "POST", "/admin/v1/keys", keeper, data=body, headers=headers
    ) as response:
        assert response.status == 400
        assert (await response.json())["detail"].startswith("body:")
    assert "twice" not in {record.name for record in await admin.lifecycle.store.records()}


async def test_a_key_in_the_admin_query_string_is_refused_and_flagged_exposed(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    # SPEC §4/§14 held on the proxy port only: `?access_token=<admin key>` was answered 401
    # (or 200 beside a good Bearer) and the key never flagged.
    admin = await start_admin(start_proxy)
    reader = (await admin.issue("reader", "sidecar:read")).key
    pasted = (await admin.issue("pasted", "sidecar:read")).key
    for query in (f"?access_token={pasted}", f"?key={pasted.replace('_', '%5F')}"):
        async with admin.request("GET", "/admin/v1/keys" + query, reader) as response:
            assert response.status == 400
            assert pasted not in await response.text()
    async with admin.request("GET", "/admin/v1/keys/pasted", reader) as response:
        assert (await response.json())["exposed"] is True


async def test_two_authorization_headers_are_refused_on_the_admin_port(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    # The first was used and the second ignored: a server in front may read the other one.
    admin = await start_admin(start_proxy)
    key = (await admin.issue("ops", "sidecar:read")).key
    headers = [("Authorization", f"Bearer {key}"), ("Authorization", "Bearer nope")]
    async with admin.proxy.session.get(admin.url + "/admin/v1/keys", headers=headers) as response:
        assert response.status == 400
        assert key not in await response.text()
