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
from typing import Protocol

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
from sidecar.proxy.upstream_head import fetch_head

_CHUNK = 64 * 1024


class Capture(Protocol):
    """Something that keeps (part of) a body as it streams past, for the audit record."""

    def feed(self, chunk: bytes) -> None:
        """Take one chunk of a body as it streams."""


# Called once the upstream's answer is read whole and before its end reaches the client, with
# the response and the upstream's time to headers: the audit record is made durable here.
Seal = Callable[[web.StreamResponse, float], Awaitable[None]]
# Statuses that never carry a body: the headers are the whole answer.
_BODILESS = frozenset({204, 304})


async def _no_seal(_response: web.StreamResponse, _upstream_s: float) -> None:
    return None


class UpstreamAborted(Exception):
    """The upstream failed after the response began: the client connection must be cut."""


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


def create_upstream_session(upstream: Upstream) -> aiohttp.ClientSession:
    """The one shared, keep-alive client session to the upstream."""
    connector = aiohttp.TCPConnector(
        limit=upstream.max_connections,
        ssl=upstream_ssl_context(upstream),
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=upstream.timeout_s, sock_connect=upstream.connect_timeout_s
        ),
        # A proxy passes bytes through: no inflating, no cookies kept between clients,
        # no headers the client did not send, no proxy settings from the environment.
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        trust_env=False,
    )


class UpstreamClient:
    """Sends one request upstream and streams the answer back to the client."""

    def __init__(
        self, upstream: Upstream, session: aiohttp.ClientSession, *, max_head_bytes: int
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
        self._session = session

    def url_for(self, raw_path: str, raw_query: str) -> URL:
        """The upstream URL for a request's raw path and query, kept as the client encoded them."""
        target = self._origin + self._base_path + raw_path
        if raw_query:
            target += "?" + raw_query
        return URL(target, encoded=True)

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
        """Forward, stream the response to the client, and return it once fully sent.

        The client's copy is complete only after `seal` returns (SPEC §17: no answer without a
        durable record): a body of known length holds back its last chunk, any other holds
        back its end (the last chunk of the chunked encoding), a body-less answer its headers.
        So a client that has the whole answer knows its record is kept; if `seal` fails, the
        connection is cut before that (or a 503 sent, when nothing was sent yet).

        Raises `UpstreamUnavailable` (502) or `UpstreamTimeout` (504) while nothing has been
        sent to the client; after that, `UpstreamAborted`, so the caller cuts the connection
        rather than finish a short response as if it were whole.
        """
        url = self.url_for(request.rel_url.raw_path, request.rel_url.raw_query_string)
        started = time.perf_counter()
        if request.method == "HEAD":
            return await self._forward_head(request, url, headers, response_headers, close, seal)
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
            )
        except (TimeoutError, aiohttp.ClientError, BodyTooLarge, BodyTimeout) as exc:
            if isinstance(body, LimitedBody) and body.failure is not None:
                raise body.failure from None
            if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
                raise UpstreamTimeout("the upstream did not answer in time") from None
            raise UpstreamUnavailable(f"the upstream failed ({type(exc).__name__})") from None
        upstream_seconds = time.perf_counter() - started
        if upstream.status < 200:
            # A 101 the client never got to ask for (Upgrade is hop-by-hop and not forwarded:
            # WebSockets are not proxied). Relayed, it would switch the client's connection to
            # a protocol the proxy does not carry; the upstream's no longer speaks HTTP either.
            upstream.close()
            raise UpstreamUnavailable(f"the upstream sent {upstream.status}, not a final response")
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in response_headers_to_return(
                upstream.headers.items(), upstream.headers.getall("Connection", ())
            ):
                response.headers.add(name, value)
            response.headers.update(response_headers)
            if close:
                response.force_close()
            length = upstream.content_length
            if length == 0 or upstream.status in _BODILESS:
                await seal(response, upstream_seconds)
                await response.prepare(request)
                await response.write_eof()
                return Forwarded(response=response, upstream_seconds=upstream_seconds)
            held = await self._relay(request, upstream, response, length, capture)
            try:
                await seal(response, upstream_seconds)
            except Unavailable as exc:
                if response.prepared:
                    raise UpstreamAborted(f"audit record not kept: {exc.detail}") from None
                raise
            if not response.prepared:
                await response.prepare(request)
            # The held chunk and the end in one write (and one TLS record when it is small).
            await response.write_eof(held)
        finally:
            upstream.release()
        return Forwarded(response=response, upstream_seconds=upstream_seconds)

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
        response = web.StreamResponse(status=answer.status, reason=answer.reason or None)
        for name, value in response_headers_to_return(answer.headers, connection):
            response.headers.add(name, value)
        response.headers.update(response_headers)
        if close:
            response.force_close()
        await seal(response, upstream_seconds)  # a HEAD answer is whole with its headers
        await response.prepare(request)
        await response.write_eof()
        return Forwarded(response=response, upstream_seconds=upstream_seconds)

    @staticmethod
    async def _relay(
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        length: int | None,
        capture: Capture | None,
    ) -> bytes:
        """Stream the upstream's body to the client, all but the chunk that completes a body of
        known `length` (returned, for after the seal). Headers go out with the first chunk
        written, so a body that arrives in one chunk leaves in one write after the seal."""
        sent = 0
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                if capture is not None:
                    capture.feed(chunk)
                if length is not None and sent + len(chunk) >= length:
                    return chunk  # the client library stops at `length`: this is the last
                if not response.prepared:
                    await response.prepare(request)
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    # The client went away. aiohttp's error for it is also a ClientError;
                    # a plain one keeps it from passing for an upstream failure below.
                    raise ConnectionResetError("the client closed the connection") from None
                sent += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamAborted(type(exc).__name__) from None
        return b""


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
