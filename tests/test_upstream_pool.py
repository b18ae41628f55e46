"""The upstream pool against a raw upstream sending hand-crafted bytes: keep-alive reuse, and
strict reading of the response (fail closed: 502 and the connection never reused)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.conftest import Proxy, ProxyFactory
from tests.rawupstream import OK, RawUpstream, dechunked, serving_raw, start, status_of


async def test_keep_alive_connections_are_reused(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    proxy = await start(start_proxy, raw)
    for _ in range(5):
        async with proxy.request("GET", "/public/x") as response:
            assert response.status == 200
            assert await response.read() == b"ok"
    assert raw.accepted == 1
    assert len(raw.requests) == 5


MALFORMED = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "gzip-framing": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
    "gzip-then-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "two-te-fields": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "control-byte": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "longer-than-declared": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
    "body-after-204": b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
    b"Connection: upgrade\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_response_not_read_unambiguously_is_a_502_and_its_connection_is_dropped(
    start_proxy: ProxyFactory, raw: RawUpstream, case: str
) -> None:
    raw.replies["/public/bad"] = MALFORMED[case]
    proxy = await start(start_proxy, raw)
    assert await status_of(proxy, "/public/x") == 200
    assert await status_of(proxy, "/public/bad") == 502
    assert await status_of(proxy, "/public/x") == 200
    assert raw.accepted == 2  # the bad answer's connection was not used again


async def test_interim_100_is_skipped(start_proxy: ProxyFactory, raw: RawUpstream) -> None:
    raw.replies["/public/c"] = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    proxy = await start(start_proxy, raw)
    async with proxy.request("GET", "/public/c") as response:
        assert response.status == 200
        assert await response.read() == b"ok"


async def test_connection_close_is_honoured(start_proxy: ProxyFactory, raw: RawUpstream) -> None:
    raw.replies["/public/c"] = (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    proxy = await start(start_proxy, raw)
    for _ in range(3):
        assert await status_of(proxy, "/public/c") == 200
    assert raw.accepted == 3


async def test_early_close_of_a_small_body_is_a_502(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    async def short(writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        return False

    raw.replies["/public/short"] = short
    proxy = await start(start_proxy, raw)
    # Small bodies are read whole before anything is sent: the client gets a clean 502.
    assert await status_of(proxy, "/public/short") == 502


async def test_early_close_of_a_large_body_cuts_the_client_connection(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    async def cut(writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000)
        await writer.drain()
        return False

    raw.replies["/public/cut"] = cut
    proxy = await start(start_proxy, raw)
    async with proxy.request("GET", "/public/cut") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_chunked_and_large_bodies_arrive_whole(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: streamed, not read whole
    raw.replies["/public/big"] = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (
        len(big),
        big,
    )
    raw.replies["/public/chunked"] = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: dropped\r\n\r\n"
    )
    proxy = await start(start_proxy, raw)
    for _ in range(2):  # and the connection stays good for the next one
        async with proxy.request("GET", "/public/big") as response:
            assert await response.read() == big
        async with proxy.request("GET", "/public/chunked") as response:
            assert await response.read() == b"abcdefg"
            assert "X-Trailer" not in response.headers
    assert raw.accepted == 1


async def test_request_bodies_are_framed_by_what_is_sent(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    proxy = await start(start_proxy, raw)
    assert await status_of(proxy, "/public/j", method="POST", json={"a": 1}) == 200
    held = raw.requests[-1]
    assert b"Content-Length: 8\r\n" in held
    assert held.endswith(b'\r\n\r\n{"a": 1}')

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first,"
        yield b"second"

    headers = {"Content-Type": "application/octet-stream"}
    assert await status_of(proxy, "/public/s", method="POST", data=chunks(), headers=headers) == 200
    streamed = raw.requests[-1]
    assert b"transfer-encoding: chunked" in streamed.lower()
    assert b"content-length" not in streamed.lower()
    assert dechunked(streamed.partition(b"\r\n\r\n")[2]) == b"first,second"
    assert await status_of(proxy, "/public/e", method="DELETE") == 200
    assert b"Content-Length: 0\r\n" in raw.requests[-1]
    assert raw.accepted == 1


async def test_https_upstream_is_verified_against_its_ca_file(
    start_proxy: ProxyFactory, tmp_path: Path, ca: trustme.CA
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with serving_raw(server_context) as tls_upstream:
        url = f"https://localhost:{tls_upstream.port}"
        trusting: Proxy = await start_proxy(upstream={"url": url, "ca_file": str(ca_file)})
        for _ in range(3):
            assert await status_of(trusting, "/public/x") == 200
        assert tls_upstream.accepted == 1
        # Without the CA, the upstream's certificate is refused: 502, nothing forwarded.
        untrusting: Proxy = await start_proxy(upstream={"url": url})
        assert await status_of(untrusting, "/public/x") == 502
        assert len(tls_upstream.requests) == 3
