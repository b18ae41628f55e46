"""The ceiling: the fastest TLS reverse proxy this stack allows, with no auth and no audit.

What the sidecar costs beyond this is the price of its features, not of Python or asyncio:
raw `asyncio.Protocol` on both sides (no coroutine, no task, no request object on the hot
path: everything runs in the transports' callbacks), httptools' C llhttp parsers, whole
bodies (read once, sent as head + body in one write, so one TLS record each way), a
keep-alive upstream pool with one request in flight per connection (no pipelining),
`gc.freeze()` after start-up and uvloop. Enough HTTP/1.1 for the benchmark and for honest
framing: hop-by-hop headers dropped, Content-Length recomputed, a malformed or unsupported
request answered 400/501 and the connection closed, an upstream failure answered 502.

Run as its own process:
`python -m bench.lean_proxy --port N --upstream URL --cert-file F --key-file F`.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import ssl
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from bench.upstream import proxy_arguments, run_on_fastest_loop

POOL_LIMIT = 100  # the sidecar's and the naive proxy's default upstream pool
MAX_BODY = 16 * 1024 * 1024
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",  # recomputed from the whole body
    }
)
_UNSUPPORTED = frozenset({b"HEAD", b"CONNECT"})  # a HEAD answer has no body llhttp can frame


def _simple(status: int, reason: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason)


class Pool:
    """Idle keep-alive connections to the upstream; callers wait in line at the limit."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.host_header = f"Host: {host}:{port}\r\n".encode()
        self.idle: list[Upstream] = []
        self.count = 0
        self.waiting: collections.deque[Client] = collections.deque()

    def acquire(self, client: Client) -> None:
        """Hand `client` an upstream connection now, after a connect, or when one frees up."""
        if self.idle:
            client.send_upstream(self.idle.pop())
        elif self.count < POOL_LIMIT:
            self.count += 1
            asyncio.get_running_loop().create_task(self._connect(client))
        else:
            self.waiting.append(client)

    async def _connect(self, client: Client) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        except OSError:
            self.count -= 1
            client.upstream_failed()
            return
        client.send_upstream(upstream)

    def release(self, upstream: Upstream) -> None:
        if self.waiting:
            self.waiting.popleft().send_upstream(upstream)
        else:
            self.idle.append(upstream)

    def discard(self, upstream: Upstream) -> None:
        if upstream in self.idle:
            self.idle.remove(upstream)
        self.count -= 1


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream, parsing answers with llhttp."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.reason = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def request(self, client: Client, data: bytes) -> None:
        self.client = client
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.client is not None:
            client, self.client = self.client, None
            client.upstream_failed()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.close()  # connection_lost answers the client 502

    # llhttp callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _HOP_BY_HOP:
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        head = b"HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\n\r\n" % (
            self.parser.get_status_code(),
            self.reason,
            b"".join(self.headers),
            len(body),
        )
        keep = self.parser.should_keep_alive()
        self.headers, self.body, self.reason = [], [], b""
        client, self.client = self.client, None
        if keep:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        if client is not None:
            client.answer(head + body)


class Client(asyncio.Protocol):
    """One client connection: requests parsed with llhttp, answered in order."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.size = 0
        self.pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.busy = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, b"Not Implemented")
        except httptools.HttpParserError:
            self._refuse(400, b"Bad Request")

    def _refuse(self, status: int, reason: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(_simple(status, reason))
            self.transport.close()

    # llhttp callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _HOP_BY_HOP:
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            raise httptools.HttpParserError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        if method in _UNSUPPORTED:
            self._refuse(501, b"Not Implemented")
            return
        body = b"".join(self.body)
        data = b"%s %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (
            method,
            self.url,
            self.pool.host_header,
            b"".join(self.headers),
            len(body),
            body,
        )
        self.url, self.headers, self.body, self.size = b"", [], [], 0
        self.pending.append((data, self.parser.should_keep_alive()))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self.pending and self.transport is not None:
            self.busy = True
            self.pool.acquire(self)

    def send_upstream(self, upstream: Upstream) -> None:
        if not self.pending or self.transport is None:
            self.busy = False
            self.pool.release(upstream)  # the client left while it waited
            return
        upstream.request(self, self.pending[0][0])

    def upstream_failed(self) -> None:
        self._refuse(502, b"Bad Gateway")

    def answer(self, response: bytes) -> None:
        self.busy = False
        if self.transport is None or not self.pending:
            return
        _, keep = self.pending.popleft()
        self.transport.write(response)
        if not keep:
            self.closing = True
            self.transport.close()
            return
        self._next()


async def serve(port: int, upstream: str, context: ssl.SSLContext) -> None:
    target = urlsplit(upstream)
    if target.scheme != "http" or target.hostname is None:
        raise SystemExit("--upstream must be http://host:port")
    pool = Pool(target.hostname, target.port or 80)
    loop = asyncio.get_running_loop()
    server: Any = await loop.create_server(
        lambda: Client(pool), "127.0.0.1", port, ssl=context, backlog=1024
    )
    # Everything allocated so far lives for the whole process: keep it out of the GC's scans.
    gc.collect()
    gc.freeze()
    async with server:
        await server.serve_forever()


def main() -> None:
    args, context = proxy_arguments("lean TLS pass-through proxy (the ceiling)")
    run_on_fastest_loop(serve(args.port, args.upstream, context))


if __name__ == "__main__":
    main()
