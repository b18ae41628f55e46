"""Forwarding to the one configured upstream: streaming both ways, upstream errors mapped.

The destination is fixed at start-up: only the path and query of the client's request are
carried over, so neither an absolute-form request target nor a Host header can point the
proxy anywhere else.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

from sidecar.config import Upstream
from sidecar.errors import (
    BodyTimeout,
    BodyTooLarge,
    Unavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sidecar.proxy.headers import response_headers_to_return
from sidecar.proxy.pool import ConnectionLost, UpstreamConnection, UpstreamPool
from sidecar.proxy.relay import Capture as Capture
from sidecar.proxy.relay import UpstreamAborted as UpstreamAborted
from sidecar.proxy.relay import read_whole, relay, send_body
from sidecar.proxy.upstream_head import fetch_head
from sidecar.proxy.wire import MAX_HEAD_BYTES, ResponseHead, client_content_length, request_head

# A response of known length up to this is read whole and sent with its head in one write.
WHOLE_BODY_BYTES = 64 * 1024
# RFC 9110 §9.2.2: the methods a failed attempt may repeat without doing anything twice.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


# Called once the upstream's answer is read whole and before its end reaches the client, with
# the response and the upstream's time to headers: the audit record is made durable here.
Seal = Callable[[web.StreamResponse, float], Awaitable[None]]


async def _no_seal(_response: web.StreamResponse, _upstream_s: float) -> None:
    return None


class Answer(web.StreamResponse):
    """The upstream's answer as the client gets it. Its head waits for the first body bytes
    (or the end) and leaves in the same write: `StreamResponse` sends it on its own at
    `prepare`, which made every small answer two TLS records instead of one."""

    _send_headers_immediately = False


@dataclass(slots=True)
class Forwarded:
    """What the audit and the metrics need to know about one forwarded exchange."""

    response: web.StreamResponse
    upstream_seconds: float


def upstream_ssl_context(upstream: Upstream) -> ssl.SSLContext:
    """Verifies the upstream's certificate: against `upstream.ca_file` when set."""
    if upstream.ca_file is not None:
        return ssl.create_default_context(cafile=str(upstream.ca_file))
    return ssl.create_default_context()


def create_upstream_pool(
    upstream: Upstream, *, max_head_bytes: int = MAX_HEAD_BYTES
) -> UpstreamPool:
    """The one shared pool of keep-alive connections to the upstream; a response head past
    `max_head_bytes` is a 502."""
    assert upstream.url is not None
    base = URL(upstream.url)
    assert base.host is not None
    assert base.port is not None
    return UpstreamPool(
        base.host,
        base.port,
        ssl_context=upstream_ssl_context(upstream) if base.scheme == "https" else None,
        max_connections=upstream.max_connections,
        connect_timeout_s=upstream.connect_timeout_s,
        max_head_bytes=max_head_bytes,
    )


class UpstreamClient:
    """Sends one request upstream and streams the answer back to the client."""

    def __init__(
        self, upstream: Upstream, pool: UpstreamPool, *, max_head_bytes: int = MAX_HEAD_BYTES
    ) -> None:
        assert upstream.url is not None
        base = URL(upstream.url)
        self._settings = upstream
        self._head_ssl = upstream_ssl_context(upstream) if base.scheme == "https" else None
        self._max_head_bytes = max_head_bytes
        self._origin = str(base.origin())
        self._base_path = base.raw_path.rstrip("/")
        self.host_header = base.raw_host or ""
        if base.explicit_port is not None:
            self.host_header += f":{base.explicit_port}"
        self._pool = pool

    def url_for(self, raw_path: str, raw_query: str) -> URL:
        """The upstream URL for a request's raw path and query, kept as the client encoded them."""
        return URL(self._origin + self.target_for(raw_path, raw_query), encoded=True)

    def target_for(self, raw_path: str, raw_query: str) -> str:
        """The request target sent upstream: the base path, then the client's path and query."""
        target = self._base_path + raw_path
        if raw_query:
            target += "?" + raw_query
        return target

    async def forward(
        self,
        request: web.BaseRequest,
        *,
        headers: list[tuple[str, str]],
        body: LimitedBody | bytes | None,
        response_headers: Mapping[str, str],
        close: bool = False,
        capture: Capture | None = None,
        seal: Seal = _no_seal,
    ) -> Forwarded:
        """Forward, send the response to the client, and return it once fully sent.

        The client's copy is complete only after `seal` returns (SPEC §17: no answer without a
        durable record): a small body of known length is read whole and sent, with the head,
        after it; a larger one holds back its last chunk, any other holds back its end (the
        last chunk of the chunked encoding), a body-less answer its headers. So a client that
        has the whole answer knows its record is kept; if `seal` fails, the connection is cut
        before that (or a 503 sent, when nothing was sent yet).

        Raises `UpstreamUnavailable` (502) or `UpstreamTimeout` (504) while nothing has been
        sent to the client; after that, `UpstreamAborted`, so the caller cuts the connection
        rather than finish a short response as if it were whole.
        """
        started = time.perf_counter()
        if request.method == "HEAD":
            url = self.url_for(request.rel_url.raw_path, request.rel_url.raw_query_string)
            return await self._forward_head(request, url, headers, response_headers, close, seal)
        deadline = asyncio.get_running_loop().time() + self._settings.timeout_s
        connection, head = await self._exchange(request, headers, body, deadline)
        # Released exactly once, as soon as its response is read: from then on another request
        # may be using it.
        released = False
        try:
            upstream_seconds = time.perf_counter() - started
            if head.status < 200:
                # A 101 the client never got to ask for (Upgrade is hop-by-hop and not
                # forwarded: WebSockets are not proxied). Relayed, it would switch the
                # client's connection to a protocol the proxy does not carry.
                raise UpstreamUnavailable(f"the upstream sent {head.status}, not a final response")
            response = Answer(status=head.status, reason=head.reason or None)
            for name, value in response_headers_to_return(head.headers, head.connection):
                response.headers.add(name, value)
            response.headers.update(response_headers)
            if close:
                response.force_close()
            if head.bodiless or (head.length is not None and head.length <= WHOLE_BODY_BYTES):
                data = await read_whole(connection, deadline)
                if capture is not None and data:
                    capture.feed(data)
                self._pool.release(connection)
                released = True
                await seal(response, upstream_seconds)
                await response.prepare(request)
                # Head and body in one write: one TLS record for a small answer.
                await response.write_eof(data)
                return Forwarded(response=response, upstream_seconds=upstream_seconds)
            held = await relay(request, connection, response, head.length, capture, deadline)
            try:
                await seal(response, upstream_seconds)
            except Unavailable as exc:
                if response.prepared:
                    raise UpstreamAborted(f"audit record not kept: {exc.detail}") from None
                raise
            if connection.failure is not None:  # bytes past the end arrived meanwhile
                raise UpstreamAborted("the upstream sent more than its response")
            self._pool.release(connection)
            released = True
            if not response.prepared:
                await response.prepare(request)
            # The held chunk and the end in one write (and one TLS record when it is small).
            await response.write_eof(held)
        finally:
            if not released:
                self._pool.release(connection)
        return Forwarded(response=response, upstream_seconds=upstream_seconds)

    async def _exchange(
        self,
        request: web.BaseRequest,
        headers: list[tuple[str, str]],
        body: LimitedBody | bytes | None,
        deadline: float,
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """Send the request and read the response's head.

        A keep-alive connection the upstream closed while it sat idle fails before any byte
        of an answer: an idempotent request is sent once more on a new connection, when its
        body is bytes that can be sent again; a POST, or a streamed body, is a 502.
        """
        target = self.target_for(request.rel_url.raw_path, request.rel_url.raw_query_string)
        streamed = isinstance(body, LimitedBody)
        retryable = not streamed and request.method in _IDEMPOTENT
        length = client_content_length(headers) if streamed else None
        if isinstance(body, bytes):
            length = len(body)
        head = request_head(
            request.method, target, headers, content_length=length, chunked=streamed
        )
        payload = head + body if isinstance(body, bytes) else head  # one write, one segment
        try:
            async with asyncio.timeout_at(deadline):
                for attempt in (1, 2):
                    connection = await self._pool.acquire(fresh=attempt == 2)
                    try:
                        connection.send(payload, more=streamed)
                        if isinstance(body, LimitedBody):
                            await send_body(connection, body, chunked=length is None)
                        return connection, await connection.read_head()
                    except ConnectionLost:
                        if connection.head is not None:  # it answered, then closed
                            return connection, connection.head
                        self._pool.release(connection)
                        # An idle connection the upstream had closed: no byte of an answer
                        # came, and bytes can be sent again. Only for an idempotent method
                        # (RFC 9110 §9.2.2): the upstream may have read and acted on the
                        # request before it closed, and a POST must not happen twice.
                        stale = connection.reused and not connection.received
                        if attempt == 1 and stale and retryable:
                            continue
                        raise
                    except BaseException:
                        self._pool.release(connection)
                        raise
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _forward_head(
        self,
        request: web.BaseRequest,
        url: URL,
        headers: list[tuple[str, str]],
        response_headers: Mapping[str, str],
        close: bool,
        seal: Seal,
    ) -> Forwarded:
        started = time.perf_counter()
        answer = await fetch_head(
            url,
            headers,
            ssl_context=self._head_ssl,
            connect_timeout_s=self._settings.connect_timeout_s,
            timeout_s=self._settings.timeout_s,
            max_head_bytes=self._max_head_bytes,
        )
        upstream_seconds = time.perf_counter() - started
        if answer.status < 200:
            raise UpstreamUnavailable(f"the upstream sent {answer.status}, not a final response")
        connection = [value for name, value in answer.headers if name.lower() == "connection"]
        response = Answer(status=answer.status, reason=answer.reason or None)
        for name, value in response_headers_to_return(answer.headers, connection):
            response.headers.add(name, value)
        response.headers.update(response_headers)
        if close:
            response.force_close()
        await seal(response, upstream_seconds)  # a HEAD answer is whole with its headers
        await response.prepare(request)
        await response.write_eof()
        return Forwarded(response=response, upstream_seconds=upstream_seconds)


async def body_chunks(stream: aiohttp.StreamReader, timeout_s: float) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive.

    Raises `BodyTimeout` when the client sends nothing for `timeout_s` (SPEC §14,
    `limits.body_timeout_s`): a body that stalls after a few bytes must not hold a connection
    (and an upstream connection) until the upstream's own timeout.
    """
    while True:
        chunk = stream.read_nowait()  # what has arrived already needs no timer
        if not chunk:
            if stream.at_eof():
                return
            try:
                async with asyncio.timeout(timeout_s):
                    chunk = await stream.readany()
            except TimeoutError:
                raise BodyTimeout(
                    f"the request body stalled for more than {timeout_s:g} s"
                ) from None
            if not chunk:
                return
        yield chunk


class LimitedBody:
    """The request body, streamed chunk by chunk, cut off once it passes `max_bytes` or
    stalls for `timeout_s`.

    The client library wraps whatever the body iterator raises, so `failure` is what tells
    the caller that the 413 (or 408) was ours and not the upstream's.
    """

    def __init__(
        self,
        stream: aiohttp.StreamReader,
        max_bytes: int,
        *,
        timeout_s: float,
        capture: Capture | None = None,
    ) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._capture = capture
        self.failure: BodyTooLarge | BodyTimeout | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        try:
            async for chunk in body_chunks(self._stream, self._timeout_s):
                seen += len(chunk)
                if seen > self._max_bytes:
                    raise BodyTooLarge(f"the request body is larger than {self._max_bytes} bytes")
                if self._capture is not None:
                    self._capture.feed(chunk)
                yield chunk
        except (BodyTooLarge, BodyTimeout) as exc:
            self.failure = exc
            raise
