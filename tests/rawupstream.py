"""A raw upstream for the pool's tests: it answers each path with the bytes a test gives it,
so malformed framing can be sent on purpose."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # conftest imports this module for its `raw` fixture
    from tests.conftest import Proxy, ProxyFactory

# A reply: bytes to write, or a coroutine given the writer; False from it closes the connection.
Script = bytes | Callable[[asyncio.StreamWriter], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class RawUpstream:
    """A loopback server that reads requests strictly enough for the tests and answers each
    path with the bytes a test gave it. Counts the connections it accepted."""

    port: int = 0
    accepted: int = 0
    requests: list[bytes] = field(default_factory=list)
    replies: dict[str, Script] = field(default_factory=dict)
    drop_second: bool = False  # close, unanswered, the second request on a connection
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await _read_body(reader, head)
                served += 1
                if self.drop_second and served == 2:
                    return
                self.requests.append(head + body)
                self.arrived.set()
                reply = self.replies.get(head.split(b" ")[1].decode(), OK)
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                elif not await reply(writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        return await reader.readuntil(b"\r\n0\r\n\r\n")
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


def dechunked(data: bytes) -> bytes:
    """The payload of a whole chunked body (no extensions, no trailers)."""
    out = b""
    for _ in range(len(data)):  # bounded: every round consumes at least one byte
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert data == b"\r\n"
            return out
        out, data = out + data[:size], data[size + 2 :]
    raise AssertionError("no last chunk")


@asynccontextmanager
async def serving_raw(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[RawUpstream]:
    """A `RawUpstream` listening on a free loopback port until the context exits."""
    upstream = RawUpstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, ssl=ssl_context)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream
        upstream.release.set()


async def start(start_proxy: ProxyFactory, raw: RawUpstream, **upstream: object) -> Proxy:
    proxy: Proxy = await start_proxy(upstream={"url": raw.url, **upstream})
    return proxy


async def status_of(proxy: Proxy, path: str, **kwargs: object) -> int:
    async with proxy.request(kwargs.pop("method", "GET"), path, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return int(response.status)
