"""Attacks from the upstream's side on the pool's reading of responses: what reaches the
client must be one response read unambiguously, and after anything malformed the connection
is closed, so the next request (another client's, another key's) cannot read its leftovers.
Each upstream is a raw socket writing hand-crafted bytes; each client a real TLS one."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_tls_exchange, wait_until
from tests.rawupstream import OK, RawUpstream, start, status_of

GET = b"GET /public/bad HTTP/1.1\r\nHost: localhost\r\n\r\n"
LENGTH_2 = b"Content-Length: 2\r\n\r\nok"


async def bad_then_good(proxy: Proxy, raw: RawUpstream) -> int:
    """The status of /public/bad; then a good request must be answered on a new connection."""
    status = await status_of(proxy, "/public/bad")
    assert await status_of(proxy, "/public/x") == 200
    assert raw.accepted == 2, "a connection that carried a malformed answer was used again"
    return status


OVERSIZED = {
    "one-long-field": b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 200_000 + b"\r\n" + LENGTH_2,
    "many-fields": b"HTTP/1.1 200 OK\r\n" + b"X-A: a\r\n" * 20_000 + LENGTH_2,
    "long-reason": b"HTTP/1.1 200 " + b"R" * 200_000 + b"\r\n" + LENGTH_2,
    "long-interim": b"HTTP/1.1 100 Continue\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n" + OK,
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
async def test_a_response_head_past_the_limit_is_a_502(
    start_proxy: ProxyFactory, raw: RawUpstream, case: str
) -> None:
    """llhttp bounds no head: unbounded, an upstream could stream fields into the sidecar's
    memory until the timeout, and a head no client library reads would be passed on."""
    raw.replies["/public/bad"] = OVERSIZED[case]
    proxy = await start(start_proxy, raw)
    assert await bad_then_good(proxy, raw) == 502


async def test_a_large_head_within_the_limit_is_relayed(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    cookies = b"".join(b"Set-Cookie: c%d=%s\r\n" % (n, b"v" * 4000) for n in range(8))
    raw.replies["/public/x"] = b"HTTP/1.1 200 OK\r\n" + cookies + LENGTH_2
    proxy = await start(start_proxy, raw)
    async with proxy.request("GET", "/public/x") as response:
        assert response.status == 200
        assert len(response.headers.getall("Set-Cookie")) == 8
        assert await response.read() == b"ok"


@pytest.mark.parametrize("byte", [b"\x01", b"\x7f", b"\x1b"])
async def test_a_control_byte_in_the_reason_phrase_is_a_502(
    start_proxy: ProxyFactory, raw: RawUpstream, byte: bytes
) -> None:
    """llhttp lets these by and aiohttp's writer refuses them: a 500 of the sidecar's own,
    as if it had failed, instead of the upstream's fault (502) and its connection dropped."""
    raw.replies["/public/bad"] = b"HTTP/1.1 200 O" + byte + b"K\r\n" + LENGTH_2
    proxy = await start(start_proxy, raw)
    assert await bad_then_good(proxy, raw) == 502


async def test_a_reason_phrase_with_tabs_and_spaces_is_relayed(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    raw.replies["/public/x"] = b"HTTP/1.1 200 All\tgood here\r\n" + LENGTH_2
    proxy = await start(start_proxy, raw)
    async with proxy.request("GET", "/public/x") as response:
        assert (response.status, response.reason) == (200, "All\tgood here")


MALFORMED_MORE = {
    "junk-after-100": b"HTTP/1.1 100 Continue\r\n\r\njunk\r\n\r\n" + OK,
    "body-on-100": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello" + OK,
    "body-after-304": b"HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\n" + LENGTH_2,
    "chunked-204": b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cr-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\n" + LENGTH_2,
    "space-in-name": b"HTTP/1.1 200 OK\r\nX A: b\r\n" + LENGTH_2,
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + LENGTH_2,
    "status-1000": b"HTTP/1.1 1000 K\r\n" + LENGTH_2,
    "status-099": b"HTTP/1.1 099 K\r\n" + LENGTH_2,
    "te-chunked-identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "chunk-size-0x": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n",
    "chunk-size-overflow": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffff\r\nok\r\n0\r\n\r\n",
    "content-length-in-trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\nContent-Length: 5\r\n\r\n",
    "cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
    "cl-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "second-response-behind": OK + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MORE))
async def test_more_responses_not_read_unambiguously_are_502s(
    start_proxy: ProxyFactory, raw: RawUpstream, case: str
) -> None:
    raw.replies["/public/bad"] = MALFORMED_MORE[case]
    proxy = await start(start_proxy, raw)
    assert await bad_then_good(proxy, raw) == 502


async def test_the_upstream_closing_mid_head_is_a_502(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    async def half_a_head(writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-A: a")
        await writer.drain()
        return False

    raw.replies["/public/bad"] = half_a_head
    proxy = await start(start_proxy, raw)
    assert await bad_then_good(proxy, raw) == 502


async def test_headers_are_relayed_as_sent_and_the_sidecars_own_win(
    start_proxy: ProxyFactory, raw: RawUpstream, client_ssl: ssl.SSLContext
) -> None:
    raw.replies["/public/x"] = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nSet-Cookie: c=3; Path=/\r\n"
        b"X-A: caf\xc3\xa9\r\nStrict-Transport-Security: max-age=0\r\nX-Request-Id: forged\r\n"
        + LENGTH_2
    )
    proxy = await start(start_proxy, raw)
    request = b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: mine\r\n\r\n"
    response = await raw_tls_exchange(proxy.server.proxy_port, request, client_ssl, within=1.5)
    head = response.raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert [line for line in head if line.startswith(b"Set-Cookie")] == [
        b"Set-Cookie: a=1",
        b"Set-Cookie: b=2",
        b"Set-Cookie: c=3; Path=/",
    ]
    assert b"X-A: caf\xc3\xa9" in head
    assert [line for line in head if line.lower().startswith(b"x-request-id")] == [
        b"X-Request-Id: mine"
    ]
    assert b"max-age=0" not in response.raw


@pytest.mark.parametrize(
    ("reply", "reused"),
    [
        pytest.param(b"HTTP/1.0 200 OK\r\n" + LENGTH_2, False, id="http-1.0"),
        pytest.param(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n" + LENGTH_2, True,
                     id="http-1.0-keep-alive"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + LENGTH_2, False, id="close"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: Close, X-A\r\nX-A: 1\r\n" + LENGTH_2,
                     False, id="close-listed"),
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, True, id="103"),
        pytest.param(b"HTTP/1.1 199 Odd\r\n\r\n" + OK, True, id="199-interim"),
    ],
)  # fmt: skip
async def test_the_connection_is_kept_only_when_the_upstream_lets_it(
    start_proxy: ProxyFactory, raw: RawUpstream, reply: bytes, reused: bool
) -> None:
    raw.replies["/public/r"] = reply
    proxy = await start(start_proxy, raw)
    async with proxy.request("GET", "/public/r") as response:
        assert (response.status, await response.read()) == (200, b"ok")
        assert "X-A" not in response.headers
    assert await status_of(proxy, "/public/x") == 200
    assert raw.accepted == (1 if reused else 2)


async def test_a_late_unsolicited_response_never_answers_the_next_request(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    """Bytes on an idle connection (a second response nobody asked for) close it: the next
    request, another client's, is answered on a connection of its own."""
    sent_late = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def answer_then_more(writer: asyncio.StreamWriter) -> bool:
        writers.append(writer)
        writer.write(OK)
        await writer.drain()
        await raw.release.wait()  # the client has its answer: the connection sits idle
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
        await writer.drain()
        sent_late.set()
        return True

    raw.replies["/public/first"] = answer_then_more
    proxy = await start(start_proxy, raw)
    async with proxy.request("GET", "/public/first") as response:
        assert await response.read() == b"ok"
    raw.release.set()
    await asyncio.wait_for(sent_late.wait(), 3)

    async def closed_by_the_proxy() -> bool:
        # The proxy's close ends the upstream's read loop, which then closes its end.
        return writers[0].is_closing()

    await wait_until(closed_by_the_proxy, within=3)
    for _ in range(3):
        async with proxy.request("GET", "/public/x") as response:
            assert await response.read() == b"ok"
    assert raw.accepted == 2
