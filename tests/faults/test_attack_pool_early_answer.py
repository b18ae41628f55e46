"""An upstream that answers before it has the whole request body (a 401 or 413 sent early,
as many servers do) and goes on reading that body afterwards, as HTTP/1.1 lets it.

If the client's body then never arrives whole (the client stalls or hangs up), the request
on that upstream connection is unfinished: the upstream is still waiting for body bytes. A
pool that kept the connection because its *response* had ended would hand it to the next
request, whose head the upstream then reads as the rest of the first body: one client's
request swallowed into another's (request desync). The connection must be closed instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until

EARLY = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
DECLARED = 4096  # the body the first client declares and never finishes


@dataclass
class EarlyAnswering:
    """Answers each request as soon as its head arrives, then reads its declared body."""

    port: int = 0
    accepted: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            for _ in range(100):  # bounded: a test sends a handful of requests
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                writer.write(EARLY if b"/public/early" in head else OK)
                await writer.drain()
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.bodies.append(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def early_answering() -> AsyncIterator[EarlyAnswering]:
    upstream = EarlyAnswering()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def unfinished_post() -> bytes:
    return (
        b"POST /public/early HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
        % DECLARED
        + b"x" * 10
    )


async def send_unfinished(
    port: int, client_ssl: ssl.SSLContext, upstream: EarlyAnswering, *, hang_up: bool
) -> bytes:
    """Send a POST whose body stops after 10 bytes; once the upstream has answered it, hang
    up, or stall until the sidecar gives up on the body. Returns what the client received."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ssl, server_hostname="localhost"
    )
    received = b""
    try:
        writer.write(unfinished_post())
        await writer.drain()

        async def answered() -> bool:
            return len(upstream.heads) == 1

        await wait_until(answered, within=3)
        if not hang_up:
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(5):
                    while chunk := await reader.read(65536):
                        received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)
    return received


async def test_an_unfinished_request_body_is_never_followed_by_the_next_request(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    async with early_answering() as upstream:
        proxy: Proxy = await start_proxy(
            upstream={"url": f"http://127.0.0.1:{upstream.port}", "timeout_s": 3},
            limits={"body_timeout_s": 0.5},
        )
        await send_unfinished(proxy.server.proxy_port, client_ssl, upstream, hang_up=False)
        async with proxy.request("GET", "/public/next") as response:
            assert response.status == 200
            assert await response.read() == b"ok"
        assert upstream.accepted == 2, "the unfinished request's connection was used again"
        assert not any(b"/public/next" in body for body in upstream.bodies)


async def test_a_client_that_hangs_up_mid_body_takes_the_upstream_connection_with_it(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    async with early_answering() as upstream:
        proxy: Proxy = await start_proxy(
            upstream={"url": f"http://127.0.0.1:{upstream.port}", "timeout_s": 3}
        )
        await send_unfinished(proxy.server.proxy_port, client_ssl, upstream, hang_up=True)
        async with proxy.request("GET", "/public/next") as response:
            assert response.status == 200
            assert await response.read() == b"ok"
        assert upstream.accepted == 2, "the unfinished request's connection was used again"
