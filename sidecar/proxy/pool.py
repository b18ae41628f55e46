"""Keep-alive connections to the upstream: one request in flight on each, at most
`upstream.max_connections` of them, and a connection that saw anything unexpected is closed.

Each connection is an `asyncio.Protocol` feeding llhttp (httptools) directly: no stream
reader, no per-chunk task. A connection goes back to the pool only when its last response
ended exactly where its framing said, the upstream did not ask to close, and nothing else
arrived; bytes from an idle connection (a late body, a second response) close it.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Any, cast

import httptools

from sidecar.errors import UpstreamTimeout, UpstreamUnavailable
from sidecar.proxy.wire import MAX_HEAD_BYTES, HeadReader, Malformed, ResponseHead

# Body bytes held unread before the upstream socket stops being read: a slow client slows
# the upstream down instead of filling memory.
_HIGH_WATER = 256 * 1024
# Connections idle longer than this are not reused: upstreams close theirs after a few
# seconds, and a request written into a connection being closed is a wasted round trip.
IDLE_S = 15.0


class ConnectionLost(UpstreamUnavailable):
    """The connection ended before the response did (or before it began)."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream and the response being read on it."""

    def __init__(self, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reader = HeadReader(max_head_bytes)
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._reading_paused = False
        self.head: ResponseHead | None = None
        self.failure: UpstreamUnavailable | None = None
        self.done = False  # the response ended where its framing said
        self.closed = False
        self.busy = False  # a request is in flight: bytes are expected
        self.received = False  # a byte of the current response has arrived
        # The whole request (head and body) was written. An upstream may answer before it has
        # read the body and go on reading it after: a connection whose request stopped short
        # (the client stalled or left) still owes it body bytes, and the next request's would
        # be read as those (request desync).
        self.request_sent = False
        self.reused = False
        self.retired = False  # no longer counted in the pool
        self.idle_since = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: connected."""
        # uvloop's transports implement the interface without subclassing asyncio's.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the upstream, fed to llhttp at once."""
        if not self.busy or self.failure is not None:
            self._fail(Malformed("the upstream sent bytes outside a response"))
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101: the head is kept for the caller to refuse; the connection is done
        except Malformed as exc:
            self._fail(exc)
        except Exception:  # llhttp's errors, and ours raised in its callbacks
            self._fail(Malformed("the upstream sent a malformed response"))
        if self.failure is not None or (self.head is not None and self.head.status == 101):
            self._close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection ended; a close-delimited body ends with it."""
        self.closed = True
        head = self.head
        if self.busy and not self.done and self.failure is None:
            if head is not None and head.length is None and not head.chunked:
                self.done = True  # no framing: the body is whatever came before the close
            else:
                self.failure = ConnectionLost("the upstream closed the connection")
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        """asyncio: the upstream reads slower than the body is sent."""
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        """asyncio: room to write again."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        """llhttp: a response begins; a second one after the final head is not ours."""
        if self.head is not None:
            raise Malformed("the upstream sent more than its response")

    def on_status(self, reason: bytes) -> None:
        """llhttp: a piece of the reason phrase."""
        self._reader.status(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        """llhttp: a header field (trailers after a chunked body are dropped, as aiohttp does)."""
        if self.head is None:
            self._reader.header(name, value)

    def on_headers_complete(self) -> None:
        """llhttp: a head has ended."""
        parser = self._parser
        self.head = self._reader.complete(parser.get_status_code(), parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        """llhttp: body bytes, de-chunked."""
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        """llhttp: the response has ended (an informational one only resets for the next)."""
        if self.head is not None:
            self.done = True

    # -- for the forwarder -------------------------------------------------------------------
    def send(self, data: bytes, *, more: bool = False) -> None:
        """Write `data` (the caller awaits `drain` for a streamed body); `more` when the
        request goes on after it (see `request_sent`)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionLost("the upstream closed the connection")
        self.transport.write(data)
        self.request_sent = not more

    async def drain(self) -> None:
        """Wait while the upstream is not reading what was sent."""
        if self._drained is not None and not self._drained.done():
            await self._drained
        if self.closed:
            raise ConnectionLost("the upstream closed the connection")

    async def read_head(self) -> ResponseHead:
        """The response's final head; raises what went wrong before it."""
        while self.head is None:
            await self._wait()
        return self.head

    async def read_chunk(self) -> bytes:
        """The body bytes that arrived since the last call; b"" once the body has ended."""
        while True:
            if self.failure is not None:
                raise self.failure  # a body longer than declared is no body at all
            if self._chunks:
                break
            if self.done:
                return b""
            await self._wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """Whether the next request may use this connection."""
        head = self.head
        return (
            self.done
            and self.failure is None
            and not self.closed
            and head is not None
            and head.keep_alive
            and self.request_sent
            and not self._chunks
        )

    def reset(self) -> None:
        """Ready for the next request (only when `reusable`)."""
        self._parser = httptools.HttpResponseParser(self)
        self.head = None
        self.done = self.busy = self.received = self.request_sent = False
        self.idle_since = time.monotonic()

    def abandon(self) -> None:
        """Close the connection: it is never used again."""
        self.busy = False
        self._close()

    async def _wait(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self.closed and not self.done:
            raise ConnectionLost("the upstream closed the connection")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.failure is not None:
            raise self.failure

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, failure: UpstreamUnavailable) -> None:
        if self.failure is None:
            self.failure = failure
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class UpstreamPool:
    """The connections to one upstream address; `acquire` one, `release` it when done."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        connect_timeout_s: float,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self._host = host
        self._max_head_bytes = max_head_bytes
        self._port = port
        self._ssl = ssl_context
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._open = 0  # idle, busy and connecting: never more than `max_connections`
        self.connections_made = 0

    async def acquire(self, *, fresh: bool = False) -> UpstreamConnection:
        """A connection for one request: an idle one (most recent first) unless `fresh`, or a
        new one while fewer than `max_connections` are open; otherwise wait for one."""
        while True:
            while self._idle and not fresh:
                connection = self._idle.pop()
                if connection.closed or time.monotonic() - connection.idle_since > IDLE_S:
                    self._discard(connection)
                    continue
                connection.busy = True
                connection.reused = True
                return connection
            if self._open < self._max:
                return await self._connect()
            if fresh and self._idle:
                self._discard(self._idle.popleft())  # the oldest idle one makes room
                continue
            await self._wait_for_room()

    def release(self, connection: UpstreamConnection) -> None:
        """The exchange on `connection` is over: kept for the next one, or closed."""
        if not connection.busy:
            return  # discarded already
        if connection.busy and connection.reusable:
            connection.reset()
            self._idle.append(connection)
            self._wake_one()
        else:
            self._discard(connection)

    async def close(self) -> None:
        """Close every idle connection (busy ones close as their exchanges end)."""
        while self._idle:
            self._discard(self._idle.pop())
        await asyncio.sleep(0)  # let the transports run their close callbacks

    async def _connect(self) -> UpstreamConnection:
        self._open += 1
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if self._ssl is not None:
            extra = {"ssl": self._ssl, "server_hostname": self._host}
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(self._max_head_bytes),
                    self._host,
                    self._port,
                    **extra,
                )
        except TimeoutError:
            self._closed_one()
            raise UpstreamTimeout("the upstream did not accept a connection in time") from None
        except (OSError, ssl.SSLError) as exc:
            self._closed_one()
            raise UpstreamUnavailable(f"the upstream failed ({type(exc).__name__})") from None
        except BaseException:
            self._closed_one()
            raise
        self.connections_made += 1
        connection.busy = True
        return connection

    async def _wait_for_room(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, then cancelled: pass the turn on
            else:
                self._waiters.remove(waiter)
            raise

    def _discard(self, connection: UpstreamConnection) -> None:
        connection.abandon()
        if not connection.retired:  # counted once, however often it is let go
            connection.retired = True
            self._closed_one()

    def _closed_one(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
