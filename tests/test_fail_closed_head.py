"""SPEC §14 on the request head, through TLS against a running sidecar and a recording upstream.

Each test sends what an attacker sent against the previous release and checks three things:
the status, what the upstream received (or that it received nothing), and what the audit
record or the authentication event says.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict

from sidecar.keys.format import checksum
from sidecar.keys.store import KeyStore
from sidecar.proxy.headers import header_key
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_tls_exchange, wait_until
from tests.keysupport import bearer, event_for, issue, keys_section
from tests.upstream import UpstreamServer

ROUTES: list[dict[str, Any]] = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/orders/**", "methods": ["GET", "HEAD"], "scopes": ["orders:read"]},
    {"path": "/v1/orders/**", "methods": ["POST", "DELETE"], "scopes": ["orders:write"]},
    {"path": "/v1/admin", "scopes": ["admin:manage"]},
    {"path": "/v1/**", "public": True},
]
AUDIT_STREAM = "sidecar:audit"


@pytest.fixture
async def proxy(start_proxy: ProxyFactory, redis_client: aioredis.Redis) -> Proxy:
    result: Proxy = await start_proxy(keys=keys_section(header="x-api-key"), routes=ROUTES)
    return result


async def send(
    proxy: Proxy, method: str, path: str, headers: Any = None, **kwargs: Any
) -> tuple[int, str]:
    request_id = f"fc-{uuid.uuid4().hex}"
    sent = CIMultiDict(headers or {})
    sent["X-Request-Id"] = request_id
    async with proxy.request(method, path, headers=sent, **kwargs) as response:
        await response.read()
        return response.status, request_id


async def record_of(redis: aioredis.Redis, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def there() -> bool:
        entries: Any = await redis.xrange(AUDIT_STREAM)
        found[:] = [
            json.loads(fields[b"record"])
            for _id, fields in entries
            if json.loads(fields[b"record"])["request_id"] == request_id
        ]
        return bool(found)

    await wait_until(there, within=5)
    assert len(found) == 1
    return found[0]


async def event_of(redis: aioredis.Redis, request_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def there() -> bool:
        event = await event_for(redis, request_id)
        if event is not None:
            found.update(event)
        return event is not None

    await wait_until(there, within=5)
    return found


def raw_request(lines: list[str], body: bytes = b"") -> bytes:
    head = "\r\n".join([*lines, "Host: localhost", "", ""]).encode()
    return head + body


# -- header names as an upstream reads them --------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["X_Sidecar_Key_Name", "x_sidecar_scopes", "X-Sidecar_Key-Id", "X_SIDECAR_SCOPES"],
)
async def test_identity_headers_spelled_with_underscores_never_reach_the_upstream(
    proxy: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis, name: str
) -> None:
    key = await issue(redis_client, proxy.server.sidecar.settings, "reader", ["orders:read"])
    for path, extra in (("/public/x", {}), ("/v1/orders/1", bearer(key.key))):
        status, request_id = await send(proxy, "GET", path, {name: "root", **extra})
        assert status == 200
        seen = upstream.seen[-1].headers
        forged = [n for n in seen if header_key(n).startswith("x-sidecar-") and seen[n] == "root"]
        assert forged == [], path
        record = await record_of(redis_client, request_id)
        assert record["request"]["headers"][name.lower()] == "root"  # the record says it came
    assert upstream.seen[-1].headers["X-Sidecar-Key-Name"] == "reader"  # its own copy stays


async def test_headers_with_underscores_reject_and_allow_modes(
    start_proxy: ProxyFactory, upstream: UpstreamServer
) -> None:
    rejecting: Proxy = await start_proxy(limits={"headers_with_underscores": "reject"})
    status, _ = await send(rejecting, "GET", "/public/x", {"X_Custom": "1"})
    assert status == 400
    assert upstream.seen == []
    assert (await send(rejecting, "GET", "/public/x", {"X-Custom": "1"}))[0] == 200

    allowing: Proxy = await start_proxy(limits={"headers_with_underscores": "allow"})
    headers = {"X_Custom": "kept", "X_Sidecar_Scopes": "*", "Content_Type": "text/plain"}
    assert (await send(allowing, "GET", "/public/x", headers))[0] == 200
    seen = upstream.seen[-1].headers
    assert seen["X_Custom"] == "kept"
    assert "X_Sidecar_Scopes" not in seen
    assert "Content_Type" not in seen  # reads as a header the sidecar itself reads


async def test_the_default_drops_every_underscored_name(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    assert (await send(proxy, "GET", "/public/x", {"X_Custom": "1", "X-Kept": "1"}))[0] == 200
    seen = upstream.seen[-1].headers
    assert "X_Custom" not in seen
    assert seen["X-Kept"] == "1"


# -- Connection may not hide an end-to-end header --------------------------------------------------


@pytest.mark.parametrize(
    "named",
    [
        "Content-Encoding",
        "content-type",
        "Content-Length",
        "X-Forwarded-For",
        "X-Sidecar-Scopes",
        "x_sidecar_key_name",
        "Authorization",
        "X-API-Key",
        "Host",
        "X-Request-Id",
    ],
)
async def test_connection_naming_an_end_to_end_header_is_refused(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, named: str
) -> None:
    """The attack: `Content-Encoding: gzip` made the guard skip a cleartext JSON body, then the
    forwarder dropped `Content-Encoding` as hop-by-hop and the upstream read the card."""
    body = b'{"card": "4111 1111 1111 1111", "password": "hunter2"}'
    payload = raw_request(
        [
            "POST /public/orders HTTP/1.1",
            "Content-Type: application/json",
            "Content-Encoding: gzip",
            f"Connection: keep-alive, {named}",
            f"Content-Length: {len(body)}",
        ],
        body,
    )
    answer = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl)
    assert answer.status == 400
    assert b"Connection may not name" in answer.body
    assert upstream.seen == []


async def test_connection_may_name_hop_by_hop_and_extension_headers(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    headers = {"Connection": "keep-alive, X-Private-Hop", "X-Private-Hop": "1"}
    assert (await send(proxy, "GET", "/public/x", headers))[0] == 200
    assert "X-Private-Hop" not in upstream.seen[-1].headers


@pytest.mark.parametrize("name", ["Content-Type", "Content-Encoding", "X-API-Key", "Host"])
async def test_a_second_line_of_a_header_read_once_is_refused(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, name: str
) -> None:
    payload = raw_request(["GET /public/x HTTP/1.1", f"{name}: identity", f"{name}: text/plain"])
    answer = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl)
    assert answer.status == 400
    assert upstream.seen == []


# -- overrides and client-address headers ----------------------------------------------------------


async def test_method_and_url_override_headers_are_dropped(
    proxy: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    key = await issue(redis_client, proxy.server.sidecar.settings, "getter", ["orders:read"])
    overrides = {
        "X-HTTP-Method-Override": "DELETE",
        "X-HTTP-Method": "DELETE",
        "X-Method-Override": "DELETE",
        "X-Original-URL": "/v1/admin",
        "X-Rewrite-URL": "/v1/admin",
        "X-Forwarded-Prefix": "/v1/admin",
        "X-Real-IP": "10.0.0.1",
        "True-Client-IP": "10.0.0.1",
    }
    status, _ = await send(proxy, "GET", "/v1/orders/1", {**overrides, **bearer(key.key)})
    assert status == 200
    seen = upstream.seen[-1]
    assert seen.method == "GET"
    for name in overrides:
        assert name not in seen.headers, name


# -- X-Forwarded-For: every line -------------------------------------------------------------------


async def test_every_forwarded_for_line_is_read(
    start_proxy: ProxyFactory, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    """The client writes `10.9.9.9`, the trusted proxy appends its own line with the real
    address: the key allowlisted to 10.0.0.0/8 must see the real one."""
    proxy: Proxy = await start_proxy(
        keys=keys_section(), routes=ROUTES, trusted_proxies=["127.0.0.1/32"]
    )
    settings = proxy.server.sidecar.settings
    key = await issue(redis_client, settings, "internal", ["orders:read"], allow_ips=["10.0.0.0/8"])
    headers: CIMultiDict[str] = CIMultiDict(bearer(key.key))
    headers.add("X-Forwarded-For", "10.9.9.9")
    headers.add("X-Forwarded-For", "198.51.100.7")
    status, request_id = await send(proxy, "GET", "/v1/orders/1", headers)
    assert status == 401
    event = await event_of(redis_client, request_id)
    assert event["event"] == "ip_not_allowed"
    assert event["client_ip"] == "198.51.100.7"
    assert upstream.seen == []

    inside: CIMultiDict[str] = CIMultiDict(bearer(key.key))
    inside.add("X-Forwarded-For", "198.51.100.7")
    inside.add("X-Forwarded-For", "10.1.2.3")
    assert (await send(proxy, "GET", "/v1/orders/1", inside))[0] == 200
    assert upstream.seen[-1].headers.getall("X-Forwarded-For") == [
        "198.51.100.7, 10.1.2.3, 127.0.0.1"
    ]


# -- paths: one reading ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/public/..;/v1/orders/1",
        "/public/%2e%2e;x/v1/orders/1",
        "/public/.;/v1/orders/1",
        "/public/%252e%252e/v1/orders/1",
        "/public/x%252Fv1",
        "/v1/admin;jsessionid=1",  # Tomcat: /v1/admin; the table: the public /v1/**
        "/v1/admin/",  # a trailing slash frameworks ignore
        "/v1/%2561dmin",  # decoded twice: /v1/admin
        "/public/%c0%ae%c0%ae/v1",
    ],
)
async def test_a_path_that_an_upstream_may_read_as_another_route_is_refused(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, target: str
) -> None:
    answer = await raw_tls_exchange(
        proxy.server.proxy_port, raw_request([f"GET {target} HTTP/1.1"]), client_ssl
    )
    assert answer.status == 400
    assert upstream.seen == []


async def test_paths_with_parameters_that_read_the_same_are_served(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    async with proxy.session.get(
        proxy.url + "/public/a;v=1/b", headers={"X-Kept": "1"}
    ) as response:
        assert response.status == 200
    assert upstream.seen[-1].path == "/public/a;v=1/b"


# -- keys where keys must not be -------------------------------------------------------------------


async def test_a_key_in_the_path_or_another_header_is_refused_and_exposed_only_when_it_verifies(
    proxy: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    settings = proxy.server.sidecar.settings
    victim = await issue(redis_client, settings, "victim", ["orders:read"])
    # A made-up secret with a correct checksum: well-formed, but not the victim's key.
    body = f"sk_live_{victim.record.key_id}_{'A' * 43}"
    forged = body + checksum(body)

    status, request_id = await send(proxy, "GET", f"/public/{forged}")
    assert status == 400
    event = await event_of(redis_client, request_id)
    assert event["event"] == "key_in_url"
    assert "key_id" not in event  # a forgery names nobody
    assert forged not in str(event)
    assert not await exposed(redis_client, victim.record.key_id)

    status, request_id = await send(proxy, "GET", "/public/x", {"X-Note": f"see {victim.key}"})
    assert status == 400
    event = await event_of(redis_client, request_id)
    assert event["event"] == "key_in_header"
    assert event["key_id"] == victim.record.key_id
    assert victim.key not in str(event)

    status, request_id = await send(proxy, "GET", f"/public/{victim.key}/x")
    assert status == 400
    event = await event_of(redis_client, request_id)
    assert event["event"] == "key_in_url"
    assert victim.key not in event["path"]
    assert victim.record.key_id in event["path"]  # the public part stays, for the operator
    assert upstream.seen == []

    assert await exposed(redis_client, victim.record.key_id)


@pytest.mark.parametrize("form", ["urlencoded", "urlencoded-escaped", "multipart"])
async def test_a_key_in_a_form_field_is_refused_before_it_reaches_the_upstream(
    proxy: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis, form: str
) -> None:
    settings = proxy.server.sidecar.settings
    leaked = await issue(redis_client, settings, f"leaked-{form}", ["orders:read"])
    if form == "multipart":
        content_type = "multipart/form-data; boundary=XyZ"
        body = (
            b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
            + leaked.key.encode()
            + b"\r\n--XyZ--\r\n"
        )
    else:
        content_type = "application/x-www-form-urlencoded"
        value = leaked.key.replace("_", "%5F") if form.endswith("escaped") else leaked.key
        body = f"a=1&note={value}".encode()
    status, request_id = await send(
        proxy, "POST", "/public/form", {"Content-Type": content_type}, data=body
    )
    assert status == 400
    assert upstream.seen == []
    event = await event_of(redis_client, request_id)
    assert event["event"] == "key_in_header"
    assert event["key_id"] == leaked.record.key_id
    assert await exposed(redis_client, leaked.record.key_id)
    entries: Any = await redis_client.xrange(AUDIT_STREAM)
    assert all(leaked.key.encode() not in fields[b"record"] for _id, fields in entries)


async def exposed(redis: aioredis.Redis, key_id: str) -> bool:
    record = await KeyStore(redis).fetch(key_id)
    assert record is not None
    return record.exposed


# -- what an unauthenticated request may cost ------------------------------------------------------


async def test_unauthenticated_requests_are_limited_per_address_with_one_event_per_window(
    start_proxy: ProxyFactory, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    proxy: Proxy = await start_proxy(
        routes=ROUTES,
        rate_limits={"unauthenticated_per_ip": {"requests": 3, "per_seconds": 60}},
    )
    statuses = [(await send(proxy, "GET", f"/public/{n}"))[0] for n in range(3)]
    assert statuses == [200, 200, 200]
    refused = [await send(proxy, "GET", "/nowhere") for _ in range(5)]
    assert [status for status, _ in refused] == [429] * 5
    assert len(upstream.seen) == 3
    first = await event_of(redis_client, refused[0][1])
    assert first["event"] == "rate_limited"
    for _status, request_id in refused[1:]:
        assert await event_for(redis_client, request_id) is None


async def test_what_a_public_request_stores_is_bounded(
    proxy: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    long_path = "/public/" + "a" * 5000
    status, request_id = await send(proxy, "GET", long_path + "?" + "q" * 2000)
    assert status == 200
    assert upstream.seen[-1].path.startswith(long_path)  # forwarded whole
    record = await record_of(redis_client, request_id)
    assert len(record["path"]) < 1100
    assert len(record["query"]) < 1100
    status, request_id = await send(proxy, "GET", "/" + "b" * 12000)
    assert status == 403
    assert len((await event_of(redis_client, request_id))["path"]) < 1100


# -- a body that stalls ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/public/upload", "/public/json"])
async def test_a_stalled_body_gets_408_and_the_connection_closes(
    start_proxy: ProxyFactory, upstream: UpstreamServer, client_ssl: ssl.SSLContext, path: str
) -> None:
    proxy: Proxy = await start_proxy(limits={"body_timeout_s": 0.5})
    content_type = "application/json" if path.endswith("json") else "application/octet-stream"
    payload = raw_request(
        [f"POST {path} HTTP/1.1", f"Content-Type: {content_type}", "Content-Length: 100"],
        b'{"a": ',
    )
    answer = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl, within=5)
    assert answer.status == 408
    assert answer.closed
    assert all(seen.body != b'{"a": ' for seen in upstream.seen)  # nothing complete went up


# -- HEAD ------------------------------------------------------------------------------------------


async def test_an_upstream_that_sends_a_body_on_head_is_tolerated(
    start_proxy: ProxyFactory, raw_head_upstream: str
) -> None:
    proxy: Proxy = await start_proxy(upstream={"url": raw_head_upstream})
    for _ in range(3):  # the connection the body was sent on is not reused
        async with proxy.session.head(proxy.url + "/public/x") as response:
            assert response.status == 200
            assert response.headers["X-Upstream"] == "raw"
            assert response.headers["Content-Length"] == "5"
    async with proxy.session.get(proxy.url + "/public/x") as response:
        assert response.status == 200
        assert await response.read() == b"hello"


@pytest.fixture
async def raw_head_upstream() -> AsyncIterator[str]:
    """An upstream that answers HEAD with a body, as some frameworks do (a real socket)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Upstream: raw\r\n"
                    b"Content-Type: text/plain\r\n\r\nhello"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()
