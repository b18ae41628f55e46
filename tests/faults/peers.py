"""Misbehaving peers for the fault tests: raw asyncio TCP servers and a raw HTTP/1.1 reader.

A raw server speaks whatever bytes its script writes, so it can do what no well-behaved HTTP
library would: answer with a broken head, stop halfway through a body, reset the connection,
or never answer at all. Each one records what it saw and when its peer went away, for the test
to wait on (events, never sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

HEAD_END = b"\r\n\r\n"


@dataclass
class RawUpstream:
    """A TCP server on 127.0.0.1; `script` plays each connection after its request head."""

    port: int = 0
    heads: list[bytes] = field(default_factory=list)  # every request head received
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # a request head arrived
    peer_gone: asyncio.Event = field(default_factory=asyncio.Event)  # the proxy hung up
    cue: asyncio.Event = field(default_factory=asyncio.Event)  # the test says "go on"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Script = Callable[[RawUpstream, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(HEAD_END)


async def wait_for_hang_up(upstream: RawUpstream, reader: asyncio.StreamReader) -> None:
    """Read (and drop) whatever comes until the proxy closes its end, then say so."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    upstream.peer_gone.set()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: SO_LINGER on, with a zero timeout."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def raw_upstream(script: Script) -> AsyncIterator[RawUpstream]:
    """Serve `script` on a free loopback port until the context exits."""
    state = RawUpstream()
    open_writers: set[asyncio.StreamWriter] = set()
    finished = asyncio.Event()
    finished.set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        finished.clear()
        try:
            head = await read_head(reader)
            state.heads.append(head)
            state.entered.set()
            await script(state, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            state.peer_gone.set()
        finally:
            open_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if not open_writers:
                finished.set()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        state.cue.set()
        # Cut what is still open: each script then sees its connection end and returns.
        for writer in list(open_writers):
            writer.transport.abort()
        await asyncio.wait_for(finished.wait(), 5)
        await server.wait_closed()


# -- scripts ----------------------------------------------------------------------------------


async def never_answer(
    state: RawUpstream, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter
) -> None:
    """Accept the request, never answer; note when the proxy gives up on the connection."""
    await wait_for_hang_up(state, reader)


def answer_then_hold(payload: bytes) -> Script:
    """Write `payload` (a broken response, say), then keep the connection until the proxy
    drops it."""

    async def script(
        state: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(payload)
        await writer.drain()
        await wait_for_hang_up(state, reader)

    return script


def break_off(payload: bytes, *, with_reset: bool) -> Script:
    """Write the start of a response, wait for the test's cue (the client has the response
    head), then end the connection mid-body: with a FIN, or with a RST."""

    async def script(
        state: RawUpstream, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(payload)
        await writer.drain()
        await state.cue.wait()
        if with_reset:
            reset(writer)
        else:
            writer.close()

    return script


# -- reading responses off a raw connection ---------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of a repeated one
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response (Content-Length or chunked), from a kept-alive connection."""
    head = (await reader.readuntil(HEAD_END)).decode("latin-1")
    status_line, *lines = head[: -len(HEAD_END)].split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if size == 0:
                break
    else:
        body = bytearray(await reader.readexactly(int(headers.get("content-length", "0"))))
    return Response(int(status_line.split()[1]), headers, bytes(body))
