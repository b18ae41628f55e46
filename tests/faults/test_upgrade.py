"""WebSockets are not proxied (a documented decision): a request asking to upgrade is forwarded
as an ordinary request with `Upgrade` and `Connection` removed (hop-by-hop, RFC 9110 §7.6.1), the
client gets the upstream's ordinary answer — never a 101 — and its connection stays a plain
HTTP/1.1 connection that serves the next request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl

import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.faults.peers import answer_then_hold, raw_upstream, read_response
from tests.upstream import UpstreamServer

UPGRADE_HEAD = (
    b"GET /public/ws HTTP/1.1\r\n"
    b"Host: localhost\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
AFTER = b"GET /public/after HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "same-write"])
async def test_an_upgrade_request_is_forwarded_as_a_plain_request(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, pipelined: bool
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.server.proxy_port, ssl=client_ssl, server_hostname="localhost"
    )
    try:
        # Same write: the second request sits right behind the upgrade request, where a
        # server that switched protocols would take it for WebSocket frames.
        writer.write(UPGRADE_HEAD + AFTER if pipelined else UPGRADE_HEAD)
        await writer.drain()
        first = await asyncio.wait_for(read_response(reader), 5)
        assert first.status == 200, first
        assert "upgrade" not in first.headers
        assert json.loads(first.body)["path"] == "/public/ws"

        if not pipelined:
            writer.write(AFTER)
            await writer.drain()
        second = await asyncio.wait_for(read_response(reader), 5)
        assert second.status == 200, second
        assert json.loads(second.body)["path"] == "/public/after"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1)

    assert [seen.path for seen in upstream.seen] == ["/public/ws", "/public/after"]
    forwarded = upstream.seen[0].headers
    assert "Upgrade" not in forwarded
    assert "upgrade" not in forwarded.get("Connection", "").lower()
    assert "Sec-WebSocket-Key" in forwarded  # an end-to-end header: passed on as sent
    assert upstream.seen[0].body == b""  # nothing of the next request leaked into this one


async def test_an_upstream_that_switches_protocols_anyway_is_a_502(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    """The upstream never saw an Upgrade header, so a 101 is a broken upstream: relaying it
    would switch the client's connection to a protocol the proxy does not carry."""
    switched = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"\r\n\x81\x05hello"
    )
    async with raw_upstream(answer_then_hold(switched)) as upstream:
        proxy: Proxy = await start_proxy(upstream={"url": upstream.url})
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.server.proxy_port, ssl=client_ssl, server_hostname="localhost"
        )
        try:
            writer.write(UPGRADE_HEAD)
            await writer.drain()
            answer = await asyncio.wait_for(read_response(reader), 5)
            assert answer.status == 502, answer
            assert b"upgrade:" not in upstream.heads[0].lower()  # it was never asked to
            assert answer.headers["content-type"].startswith("application/problem+json")
            # The upstream's connection is dropped, not pooled for the next request.
            await asyncio.wait_for(upstream.peer_gone.wait(), 3)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 1)
