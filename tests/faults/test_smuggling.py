"""SPEC §12: a malformed request gets 400 with HSTS, its connection is closed, and nothing of it
reaches the upstream — not even a well-formed request pipelined behind it in the same write,
which is exactly what a desync attack hides there.

The standalone 400s of the classic vectors (tests/responsesupport.py) are sent by
tests/test_headers_everywhere.py; here each of those, and the vectors it lacks, is sent with a
valid request glued behind it.
"""

from __future__ import annotations

import re
import ssl

import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_tls_exchange
from tests.responsesupport import (
    MALFORMED,
    ROUTES,
    assert_problem,
    assert_security_headers,
    raw_security_headers,
)
from tests.upstream import UpstreamServer

POST = b"POST /public/x HTTP/1.1\r\nHost: localhost\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

MORE_MALFORMED = [
    pytest.param(POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", id="te-xchunked"),
    pytest.param(POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", id="te-not-last"),
    pytest.param(POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", id="te-space-colon"),
    pytest.param(POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", id="te-vertical-tab"),
    pytest.param(
        POST.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="te-in-http-1.0",
    ),
    pytest.param(
        POST + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="cl0-and-te"
    ),
    pytest.param(POST + b"Content-Length: +5\r\n\r\nhello", id="cl-plus-sign"),
    pytest.param(POST + b"Content-Length: -1\r\n\r\n", id="cl-negative"),
    pytest.param(POST + b"Content-Length: 0x5\r\n\r\nhello", id="cl-hex"),
    pytest.param(POST + b"Content-Length: 5, 5\r\n\r\nhello", id="cl-list"),
    pytest.param(CHUNKED + b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n", id="chunk-size-overflow"),
    pytest.param(CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", id="chunk-size-negative"),
    pytest.param(CHUNKED + b"5\nhello\n0\n\n", id="chunk-bare-lf"),
    pytest.param(CHUNKED + b"5\r\nhelloXX0\r\n\r\n", id="chunk-data-overrun"),
    pytest.param(
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n",
        id="space-in-header-name",
    ),
    pytest.param(b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n", id="nul"),
    pytest.param(b"GET /public/x HTTP/1.1\r\n Host: localhost\r\n\r\n", id="leading-whitespace"),
    pytest.param(
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nHost: elsewhere\r\n\r\n", id="two-hosts"
    ),
    pytest.param(b"GET /public/x y HTTP/1.1\r\nHost: localhost\r\n\r\n", id="space-in-target"),
]

BEHIND = b"GET /public/pipelined HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize("malformed", [*MALFORMED, *MORE_MALFORMED])
async def test_nothing_behind_a_malformed_request_is_served(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, malformed: bytes
) -> None:
    response = await raw_tls_exchange(proxy.server.proxy_port, malformed + BEHIND, client_ssl)
    assert response.status == 400, response.raw[:200]
    assert_security_headers(raw_security_headers(response))
    assert_problem(
        response.body, response.headers["content-type"], 400, response.headers["x-request-id"]
    )
    assert response.closed, "the connection stayed open after a malformed request"
    assert response.raw.count(b"HTTP/1.") == 1, "the request pipelined behind was answered"

    # A request on a fresh connection, then: had anything of the bad exchange been forwarded,
    # it would have been forwarded before this one.
    async with proxy.request("GET", "/public/marker") as marker:
        assert marker.status == 200
    assert [seen.path for seen in upstream.seen] == ["/public/marker"]


# A refusal that comes before the body is read (no route, no key, a key in the URL, a bad
# path) must still consume that body as a body: a server that parsed it as the next request
# would serve whatever the attacker hid there (a CL.0 desync).
HIDDEN = b"GET /public/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
KEY_SHAPED = b"sk_live_" + b"A" * 17 + b"_" + b"A" * 49


def with_length(target: bytes) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN
    )


def chunked(target: bytes) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n"
    )


REFUSED_WITH_A_BODY = [
    pytest.param(with_length(b"/nowhere"), 403, id="no-route"),
    pytest.param(chunked(b"/nowhere"), 403, id="no-route-chunked"),
    pytest.param(with_length(b"/v1/orders"), 401, id="no-key"),
    pytest.param(chunked(b"/v1/orders"), 401, id="no-key-chunked"),
    pytest.param(with_length(b"/public/x?key=" + KEY_SHAPED), 400, id="key-in-url"),
    pytest.param(with_length(b"/public/a/../b"), 400, id="dot-segment"),
]
AFTER = b"GET /public/after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@pytest.mark.parametrize(("refused", "status"), REFUSED_WITH_A_BODY)
async def test_a_request_hidden_in_a_refused_body_is_never_served(
    start_proxy: ProxyFactory,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
    refused: bytes,
    status: int,
) -> None:
    proxy: Proxy = await start_proxy(routes=ROUTES)
    response = await raw_tls_exchange(proxy.server.proxy_port, refused + AFTER, client_ssl)
    statuses = [int(code) for code in STATUS_LINE.findall(response.raw)]
    # The refusal, then (unless the proxy chose to close) the request that really came next.
    assert statuses in ([status], [status, 200]), response.raw[:300]
    assert [seen.path for seen in upstream.seen] == ["/public/after"] * (len(statuses) - 1)
