"""Attacks from the client's side on the request head the sidecar writes upstream: what the
upstream receives must be one unambiguous HTTP/1.1 message, framed by Content-Length or
chunked (never both), with the path, headers and body the sidecar checked. The upstream's
bytes are captured raw and read by a second, strict parser (llhttp's request parser)."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httptools
import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_tls_exchange, wait_until

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HOST = b"Host: localhost\r\n"
OCTETS = b"Content-Type: application/octet-stream\r\n"


@dataclass
class Message:
    """One request as the strict parser read it."""

    method: bytes = b""
    url: bytes = b""
    version: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


@dataclass
class Capturing:
    """An upstream that reads every byte with llhttp and answers each message it completes."""

    port: int = 0
    raw: bytearray = field(default_factory=bytearray)
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = Message()

        class Callbacks:
            def on_url(self, url: bytes) -> None:
                current.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                current.headers.append((name, value))

            def on_body(self, body: bytes) -> None:
                current.body += body

        capture = self

        class Complete(Callbacks):
            def on_message_complete(self) -> None:
                nonlocal current
                current.method = parser.get_method()
                current.version = parser.get_http_version()
                capture.messages.append(current)
                current = Message()
                writer.write(OK)

        parser = httptools.HttpRequestParser(Complete())
        try:
            while data := await reader.read(65536):
                self.raw += data
                parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.errors.append(type(exc).__name__)
        except ConnectionError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def capturing() -> AsyncIterator[Capturing]:
    upstream = Capturing()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


@pytest.fixture
async def sent(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> AsyncIterator[tuple[Capturing, Proxy]]:
    async with capturing() as upstream:
        proxy: Proxy = await start_proxy(upstream={"url": f"http://127.0.0.1:{upstream.port}"})
        yield upstream, proxy


async def exchange(proxy: Proxy, payload: bytes, client_ssl: ssl.SSLContext) -> list[int]:
    """Send raw bytes to the sidecar; the statuses it answered with."""
    response = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl, within=1.5)
    return [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", response.raw)]


def assert_one_framing(message: Message) -> None:
    lengths, codings = message.header(b"Content-Length"), message.header(b"Transfer-Encoding")
    assert not (lengths and codings), "framed by both Content-Length and Transfer-Encoding"
    assert len(lengths) <= 1
    assert len(codings) <= 1
    assert codings in ([], [b"chunked"])
    assert message.version == "1.1"


# (what the client sends, method, target, a header that must arrive as is, body upstream)
FORWARDED = {
    "latin-1-value": (b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: caf\xe9\r\n\r\n",
                      b"GET", b"/public/a", (b"X-A", b"caf\xe9"), b""),
    "utf-8-value": (b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: caf\xc3\xa9\r\n\r\n",
                    b"GET", b"/public/a", (b"X-A", b"caf\xc3\xa9"), b""),
    # HEAD answers are read on a connection of their own (upstream_head): the same bytes.
    "head-latin-1-value": (b"HEAD /public/a HTTP/1.1\r\n" + HOST + b"X-A: caf\xe9\r\n\r\n",
                           b"HEAD", b"/public/a", (b"X-A", b"caf\xe9"), b""),
    "head-utf-8-value": (b"HEAD /public/a HTTP/1.1\r\n" + HOST + b"X-A: caf\xc3\xa9\r\n\r\n",
                         b"HEAD", b"/public/a", (b"X-A", b"caf\xc3\xa9"), b""),
    "tab-in-value": (b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\tb\r\n\r\n",
                     b"GET", b"/public/a", (b"X-A", b"a\tb"), b""),
    "colon-in-value": (b"GET /public/a HTTP/1.1\r\n" + HOST + b"X:A: b\r\n\r\n",
                       b"GET", b"/public/a", (b"X", b"A: b"), b""),
    "long-value": (b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: " + b"v" * 7000 + b"\r\n\r\n",
                   b"GET", b"/public/a", (b"X-A", b"v" * 7000), b""),
    "absolute-form": (b"GET http://elsewhere.example/public/a?q=1 HTTP/1.1\r\n" + HOST + b"\r\n",
                      b"GET", b"/public/a?q=1", None, b""),
    "fragment": (b"GET /public/a#frag HTTP/1.1\r\n" + HOST + b"\r\n",
                 b"GET", b"/public/a", None, b""),
    "odd-query": (b"GET /public/a?x=\"<>{}|^` HTTP/1.1\r\n" + HOST + b"\r\n",
                  b"GET", b"/public/a?x=\"<>{}|^`", None, b""),
    "custom-method": (b"PURGE /public/a HTTP/1.1\r\n" + HOST + b"\r\n",
                      b"PURGE", b"/public/a", (b"Content-Length", b"0"), b""),
    "http-1.0-client": (b"POST /public/a HTTP/1.0\r\n" + OCTETS + b"Content-Length: 2\r\n\r\nok",
                        b"POST", b"/public/a", (b"Content-Length", b"2"), b"ok"),
    "get-with-body": (b"GET /public/a HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
                      b"GET", b"/public/a", (b"Content-Length", b"5"), b"hello"),
    "leading-zeros": (b"POST /public/a HTTP/1.1\r\n" + HOST + OCTETS
                      + b"Content-Length: 002\r\n\r\nok",
                      b"POST", b"/public/a", (b"Content-Length", b"2"), b"ok"),
    "chunked-ext-trailer": (b"POST /public/a HTTP/1.1\r\n" + HOST + OCTETS
                            + b"Transfer-Encoding: CHUNKED\r\n\r\n"
                            + b"2;a=b\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
                            b"POST", b"/public/a", (b"Transfer-Encoding", b"chunked"), b"ok"),
    "expect-continue": (b"POST /public/a HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\n"
                        b"Content-Length: 2\r\n\r\nok",
                        b"POST", b"/public/a", (b"Content-Length", b"2"), b"ok"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FORWARDED))
async def test_the_upstream_reads_one_message_equal_to_the_one_checked(
    sent: tuple[Capturing, Proxy], client_ssl: ssl.SSLContext, case: str
) -> None:
    upstream, proxy = sent
    payload, method, target, header, body = FORWARDED[case]
    assert await exchange(proxy, payload, client_ssl) in ([200], [100, 200])
    assert upstream.errors == []
    [message] = upstream.messages
    assert_one_framing(message)
    assert (message.method, message.url, message.body) == (method, target, body)
    if header is not None:
        assert message.header(header[0]) == [header[1]]
    assert message.header(b"Expect") == []  # the sidecar answered it itself
    assert message.header(b"X-T") == []  # a trailer is not forwarded
    assert message.header(b"Host") == [b"127.0.0.1:%d" % upstream.port]


async def test_pipelined_requests_reach_the_upstream_as_the_same_two_messages(
    sent: tuple[Capturing, Proxy], client_ssl: ssl.SSLContext
) -> None:
    upstream, proxy = sent
    second = b"GET /public/b HTTP/1.1\r\n" + HOST + b"\r\n"
    first = (
        b"POST /public/a HTTP/1.1\r\n" + HOST + OCTETS + b"Content-Length: %d\r\n\r\n" % len(second)
    )
    # The second request is the first one's body, then again a request of its own.
    assert await exchange(proxy, first + second + second, client_ssl) == [200, 200]
    assert [(m.method, m.url, m.body) for m in upstream.messages] == [
        (b"POST", b"/public/a", second),
        (b"GET", b"/public/b", b""),
    ]
    assert upstream.errors == []


REFUSED = {
    "te-chunked-identity": b"POST /public/a HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-identity-with-cl": b"POST /public/a HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok",
    "two-te-fields": b"POST /public/a HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-twice-equal": b"POST /public/a HTTP/1.1\r\n" + HOST
    + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "trailer-content-length": b"POST /public/a HTTP/1.1\r\n" + HOST + OCTETS
    + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 50\r\n\r\n",
    "lf-in-chunk-extension": b"POST /public/a HTTP/1.1\r\n" + HOST + OCTETS
    + b"Transfer-Encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n",
    "bare-cr-in-value": b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\rX-B: b\r\n\r\n",
    "bare-lf-in-value": b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\nX-B: b\r\n\r\n",
    "del-in-value": b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\x7fb\r\n\r\n",
    "escape-in-value": b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\x1bb\r\n\r\n",
    "non-ascii-name": b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-\xe9: a\r\n\r\n",
    "empty-name": b"GET /public/a HTTP/1.1\r\n" + HOST + b": a\r\n\r\n",
    "lowercase-method": b"get /public/a HTTP/1.1\r\n" + HOST + b"\r\n",
    "connect": b"CONNECT localhost:443 HTTP/1.1\r\n" + HOST + b"\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n",
    "encoded-crlf-in-path": b"GET /public/a%0d%0aX:%20y HTTP/1.1\r\n" + HOST + b"\r\n",
    "control-in-path": b"GET /public/a\x01 HTTP/1.1\r\n" + HOST + b"\r\n",
    "non-ascii-path": b"GET /public/\xe9 HTTP/1.1\r\n" + HOST + b"\r\n",
    "no-host": b"GET /public/a HTTP/1.1\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_request_not_read_unambiguously_is_refused_and_nothing_is_forwarded(
    sent: tuple[Capturing, Proxy], client_ssl: ssl.SSLContext, case: str
) -> None:
    upstream, proxy = sent
    assert await exchange(proxy, REFUSED[case], client_ssl) == [400]
    async with proxy.request("GET", "/public/marker") as marker:
        assert marker.status == 200

    async def marker_arrived() -> bool:
        return len(upstream.messages) >= 1

    await wait_until(marker_arrived, within=3)
    assert [m.url for m in upstream.messages] == [b"/public/marker"]


@pytest.mark.parametrize(
    "request_line", [b"GET /public/a", b"GET /public/a HTTP/2.0", b"GET /public/a HTTP/1.2"]
)
async def test_a_request_line_of_another_http_version_is_refused(
    sent: tuple[Capturing, Proxy], client_ssl: ssl.SSLContext, request_line: bytes
) -> None:
    upstream, proxy = sent
    payload = request_line + b"\r\n" + HOST + b"\r\n"
    response = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl, within=1.5)
    assert re.search(rb"^HTTP/\S+ 400 ", response.raw), response.raw[:80]
    assert upstream.messages == []
