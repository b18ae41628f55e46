"""Attacks from the upstream's side on the pool's reading of responses: what reaches the
client must be one response read unambiguously, and after anything malformed the connection
is closed, so the next request (another client's, another key's) cannot read its leftovers.
Each upstream is a raw socket writing hand-crafted bytes; each client a real TLS one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.rawupstream import OK, RawUpstream, serving_raw, start, status_of

GET = b"GET /public/bad HTTP/1.1\r\nHost: localhost\r\n\r\n"
LENGTH_2 = b"Content-Length: 2\r\n\r\nok"


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    async with serving_raw() as upstream:
        yield upstream


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
