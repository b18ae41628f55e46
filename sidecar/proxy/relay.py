"""Bodies in both directions over one pooled upstream connection: the request's streamed to
it, the response's read whole (small ones) or relayed to the client chunk by chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Protocol

from aiohttp import web

from sidecar.errors import UpstreamTimeout, UpstreamUnavailable
from sidecar.proxy.pool import UpstreamConnection


class Capture(Protocol):
    """Something that keeps (part of) a body as it streams past, for the audit record."""

    def feed(self, chunk: bytes) -> None:
        """Take one chunk of a body as it streams."""


class UpstreamAborted(Exception):
    """The upstream failed after the response began: the client connection must be cut."""


async def send_body(
    connection: UpstreamConnection, body: AsyncIterable[bytes], *, chunked: bool
) -> None:
    """Stream a request body upstream: as it comes (its Content-Length is in the head), or in
    the chunked encoding when the client's length is unknown. Waits while the upstream is not
    reading, so a fast client cannot fill memory."""
    async for chunk in body:
        if not chunk:
            continue  # an empty chunk would end the chunked encoding
        if chunked:
            connection.send(b"%x\r\n%b\r\n" % (len(chunk), chunk), more=True)
        else:
            connection.send(chunk, more=True)
        await connection.drain()
    # Only now is the request whole: a body that failed midway leaves the connection owing
    # the upstream the rest, and it is closed rather than reused.
    if chunked:
        connection.send(b"0\r\n\r\n")
    else:
        connection.request_sent = True


async def read_whole(connection: UpstreamConnection, deadline: float) -> bytes:
    """The whole body (small, of known length); `UpstreamUnavailable` or `UpstreamTimeout`
    when it does not arrive whole, while nothing has been sent to the client."""
    if connection.done:
        # The whole body came with the head, as a small answer usually does: no timer (3 µs
        # of a timeout's set-up and cancel) for a read that cannot wait.
        return await connection.read_chunk()
    chunks = []
    try:
        async with asyncio.timeout_at(deadline):
            while chunk := await connection.read_chunk():
                chunks.append(chunk)
    except TimeoutError:
        raise UpstreamTimeout("the upstream did not answer in time") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def relay(
    request: web.BaseRequest,
    connection: UpstreamConnection,
    response: web.StreamResponse,
    length: int | None,
    capture: Capture | None,
    deadline: float,
) -> bytes:
    """Stream the upstream's body to the client, all but the chunk that completes a body of
    known `length` (returned, for after the seal). Headers go out with the first chunk
    written. A failure before that is a 502 or 504; after it, `UpstreamAborted`."""
    sent = 0
    try:
        while True:
            async with asyncio.timeout_at(deadline):
                chunk = await connection.read_chunk()
            if not chunk:
                return b""
            if capture is not None:
                capture.feed(chunk)
            if length is not None and sent + len(chunk) >= length:
                return chunk  # llhttp stops at `length`: this is the last
            if not response.prepared:
                await response.prepare(request)
            try:
                await response.write(chunk)
            except ConnectionResetError:
                # The client went away; a plain error keeps it from passing for an upstream one.
                raise ConnectionResetError("the client closed the connection") from None
            sent += len(chunk)
    except (UpstreamUnavailable, TimeoutError) as exc:
        if not response.prepared:
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("the upstream did not answer in time") from None
            raise
        raise UpstreamAborted(type(exc).__name__) from None
