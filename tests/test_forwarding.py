"""SPEC §6: what is forwarded, to where, and how bodies stream both ways."""

from __future__ import annotations

import gzip
import hashlib
import os
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_tls_exchange
from tests.upstream import UpstreamServer

HOP_BY_HOP_REQUEST = {
    "Connection": "keep-alive, X-Private-Hop",
    "X-Private-Hop": "for the proxy only",
    "Keep-Alive": "timeout=5",
    "Proxy-Connection": "keep-alive",
    "Proxy-Authorization": "Basic cHJveHk6cGFzcw==",
    "TE": "trailers",
    "Trailer": "X-Checksum",
}


async def test_hop_by_hop_request_headers_are_not_forwarded(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    headers = {**HOP_BY_HOP_REQUEST, "X-End-To-End": "kept"}
    async with proxy.request("GET", "/public/hop", headers=headers) as response:
        assert response.status == 200
    seen = upstream.seen[0].headers
    assert seen["X-End-To-End"] == "kept"  # the filter is not just dropping everything
    for name in ("X-Private-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization"):
        assert name not in seen, name
    assert "TE" not in seen
    assert "Trailer" not in seen
    assert "x-private-hop" not in seen.get("Connection", "").lower()


async def test_hop_by_hop_response_headers_are_not_returned(proxy: Proxy) -> None:
    async with proxy.request("GET", "/public/hop-headers") as response:
        assert response.status == 200
        headers = response.headers
    assert headers["X-End-To-End"] == "kept"
    for name in ("X-Private", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
        assert name not in headers, name
    assert "x-private" not in headers.get("Connection", "").lower()


async def test_authorization_is_not_forwarded(proxy: Proxy, upstream: UpstreamServer) -> None:
    headers = {"Authorization": "Bearer sk_live_abc_def", "X-Kept": "1"}
    async with proxy.request("GET", "/public/auth", headers=headers) as response:
        assert response.status == 200
    assert upstream.seen[0].headers["X-Kept"] == "1"
    assert "Authorization" not in upstream.seen[0].headers


async def test_configured_key_header_is_not_forwarded(
    start_proxy: ProxyFactory, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(keys={"header": "X-API-Key"})
    async with proxy.request("GET", "/public/key", headers={"X-API-Key": "sk_live_x"}) as response:
        assert response.status == 200
    assert "X-API-Key" not in upstream.seen[0].headers


async def test_client_copies_of_identity_headers_are_dropped(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    forged = {
        "X-Sidecar-Key-Name": "admin",
        "X-Sidecar-Key-Id": "forged",
        "X-Sidecar-Scopes": "*",
    }
    async with proxy.request("GET", "/public/forged", headers=forged) as response:
        assert response.status == 200
    seen = upstream.seen[0].headers
    for name, value in forged.items():
        assert value not in seen.getall(name, []), name


async def test_forwarding_headers_are_set(proxy: Proxy, upstream: UpstreamServer) -> None:
    async with proxy.request("GET", "/public/xff") as response:
        assert response.status == 200
    seen = upstream.seen[0].headers
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.getall("X-Forwarded-Proto") == ["https"]
    assert seen.getall("X-Forwarded-Host") == [f"localhost:{proxy.server.proxy_port}"]


async def test_client_forwarded_for_is_ignored_from_an_untrusted_peer(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"}
    async with proxy.request("GET", "/public/xff", headers=headers) as response:
        assert response.status == 200
    seen = upstream.seen[0].headers
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.getall("X-Forwarded-Proto") == ["https"]


async def test_client_forwarded_for_is_extended_from_a_trusted_proxy(
    start_proxy: ProxyFactory, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(trusted_proxies=["127.0.0.1/32"])
    headers = {"X-Forwarded-For": "203.0.113.9"}
    async with proxy.request("GET", "/public/xff", headers=headers) as response:
        assert response.status == 200
    assert upstream.seen[0].headers.getall("X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]


async def test_absolute_form_target_reaches_only_the_configured_upstream(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext
) -> None:
    request = (
        b"GET http://example.com/public/absolute?q=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Connection: close\r\n\r\n"
    )
    response = await raw_tls_exchange(proxy.server.proxy_port, request, client_ssl)
    assert response.status == 200
    assert [seen.path for seen in upstream.seen] == ["/public/absolute?q=1"]
    assert upstream.seen[0].headers["Host"] == upstream.url.removeprefix("http://")


async def test_foreign_host_header_reaches_only_the_configured_upstream(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    async with proxy.request(
        "GET", "/public/host", headers={"Host": "evil.example:8080"}
    ) as response:
        assert response.status == 200
    assert [seen.path for seen in upstream.seen] == ["/public/host"]
    assert upstream.seen[0].headers["Host"] == upstream.url.removeprefix("http://")
    assert upstream.seen[0].headers["X-Forwarded-Host"] == "evil.example:8080"


@pytest.mark.parametrize(
    "target",
    [
        b"/public/../admin",
        b"/public/./x",
        b"/public/%2e%2e/x",
        b"/public/%2E%2E/admin",
        b"/public%2fx",
        b"/public%2Fx",
        b"/public/%5c..%5cadmin",
        b"//public/x",
        b"/public//x",
    ],
)
async def test_non_canonical_paths_are_refused(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, target: bytes
) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    response = await raw_tls_exchange(proxy.server.proxy_port, request, client_ssl)
    assert response.status == 400, response.raw[:200]
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert upstream.seen == []


async def test_canonical_path_with_encoded_characters_is_forwarded_raw(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext
) -> None:
    """Control for the refusals above: percent-encoding alone is not a reason to refuse."""
    request = b"GET /public/a%20b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    response = await raw_tls_exchange(proxy.server.proxy_port, request, client_ssl)
    assert response.status == 200
    assert [seen.path for seen in upstream.seen] == ["/public/a%20b"]


async def _streamed(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_large_chunked_request_body_streams_through_intact(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    data = os.urandom(6 * 1024 * 1024)
    async with proxy.request("POST", "/public/upload", data=_streamed(data)) as response:
        assert response.status == 200
        await response.read()
    assert len(upstream.seen) == 1
    received = upstream.seen[0].body
    assert len(received) == len(data)
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


async def test_large_streamed_response_arrives_intact(proxy: Proxy) -> None:
    async with proxy.request("GET", "/public/big") as response:
        assert response.status == 200
        body = await response.read()
    assert len(body) == 64 * 65536
    assert body == b"y" * (64 * 65536)


async def test_upstream_reset_mid_body_is_an_error_not_a_short_body(proxy: Proxy) -> None:
    async with proxy.request("GET", "/public/reset") as response:
        assert response.status == 200  # the head was already on its way when the reset came
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            await response.read()


async def test_compressed_request_body_is_forwarded_as_is(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    compressed = gzip.compress(b'{"hello": "world"}' * 1000)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with proxy.request("POST", "/public/gzip", data=compressed, headers=headers) as response:
        assert response.status == 200
    assert upstream.seen[0].body == compressed
    assert upstream.seen[0].headers["Content-Encoding"] == "gzip"


async def test_set_cookie_reaches_the_client_but_is_not_replayed(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext
) -> None:
    async with proxy.request("GET", "/public/cookie") as response:
        assert response.status == 200
        assert response.headers.getall("Set-Cookie") == ["session=s3cr3t; Path=/"]
    # A second client, with no cookie jar of its own: anything the upstream sees came
    # from the proxy.
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl), cookie_jar=aiohttp.DummyCookieJar()
        ) as other,
        other.get(proxy.url + "/public/after") as response,
    ):
        assert response.status == 200
    assert [seen.path for seen in upstream.seen] == ["/public/cookie", "/public/after"]
    assert "Cookie" not in upstream.seen[1].headers
