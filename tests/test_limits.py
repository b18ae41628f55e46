"""Connection-level limits (SPEC §12): slowloris heads and the connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

from tests.conftest import ProxyFactory
from tests.helpers import raw_exchange
from tests.upstream import UpstreamServer

PARTIAL_HEAD = b"GET /public/slow HTTP/1.1\r\nHost: localhost\r\nX-Trickle: 1\r\n"


async def _open(
    port: int, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 3
    )


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `seconds`, and what it sent first."""
    received = bytearray()
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except TimeoutError:
            return False, bytes(received)
        except (ConnectionError, ssl.SSLError):
            return True, bytes(received)
        if not chunk:
            return True, bytes(received)
        received += chunk
    return False, bytes(received)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1)


async def test_a_head_that_never_completes_is_cut_off(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext, upstream: UpstreamServer
) -> None:
    proxy = await start_proxy(limits={"header_timeout_s": 0.5, "keepalive_s": 60})
    reader, writer = await _open(proxy.server.proxy_port, client_ssl)
    started = time.monotonic()
    writer.write(PARTIAL_HEAD)
    await writer.drain()
    closed, received = await _closed_within(reader, 5)
    elapsed = time.monotonic() - started
    await _close(writer)
    assert closed, "a connection that never finished its head was kept open"
    assert received == b""  # no response: there was no request
    assert 0.4 <= elapsed < 4, elapsed
    assert upstream.seen == []


async def test_a_silent_connection_is_cut_off_at_the_head_deadline(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    proxy = await start_proxy(limits={"header_timeout_s": 0.5, "keepalive_s": 60})
    reader, writer = await _open(proxy.server.proxy_port, client_ssl)
    closed, _ = await _closed_within(reader, 5)
    await _close(writer)
    assert closed


async def test_a_kept_alive_connection_gets_the_deadline_for_its_next_head(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext, upstream: UpstreamServer
) -> None:
    proxy = await start_proxy(limits={"header_timeout_s": 0.5, "keepalive_s": 60})
    reader, writer = await _open(proxy.server.proxy_port, client_ssl)
    writer.write(b"GET /public/first HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ).split(b":")[1]
    )
    await asyncio.wait_for(reader.readexactly(length), 3)
    writer.write(PARTIAL_HEAD)  # the next request starts, and stalls
    await writer.drain()
    closed, _ = await _closed_within(reader, 5)
    await _close(writer)
    assert closed
    assert [seen.path for seen in upstream.seen] == ["/public/first"]


async def test_a_slow_body_is_not_mistaken_for_a_slow_head(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext, upstream: UpstreamServer
) -> None:
    proxy = await start_proxy(limits={"header_timeout_s": 0.3})
    reader, writer = await _open(proxy.server.proxy_port, client_ssl)
    writer.write(
        b"POST /public/slow-body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
        b"Content-Type: application/octet-stream\r\n\r\nab"
    )
    await writer.drain()
    await asyncio.sleep(0.6)  # the stimulus: a client slower than the head deadline
    writer.write(b"cd")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    await _close(writer)
    assert head.startswith(b"HTTP/1.1 200")
    assert upstream.seen[0].body == b"abcd"


async def test_connections_over_the_cap_are_closed(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    proxy = await start_proxy(limits={"max_connections": 2})
    port = proxy.server.proxy_port
    held = [await _open(port, client_ssl) for _ in range(2)]
    try:
        reader, writer = await _open(port, client_ssl)
        closed, received = await _closed_within(reader, 3)
        await _close(writer)
        assert closed
        assert received == b""
    finally:
        for _reader, held_writer in held:
            await _close(held_writer)
    # With the held ones gone, a new connection is served again.
    response = await raw_exchange(
        port,
        b"GET /public/again HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ssl_context=client_ssl,
    )
    assert response.status == 200
