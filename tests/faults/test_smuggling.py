"""SPEC §12: a malformed request gets 400 with HSTS, its connection is closed, and nothing of it
reaches the upstream — not even a well-formed request pipelined behind it in the same write,
which is exactly what a desync attack hides there.

The standalone 400s of the classic vectors are in tests/test_headers_everywhere.py; here each of
those, and the vectors it lacks, is sent with a valid request glued behind it.
"""

from __future__ import annotations

import ssl

import pytest

from tests.conftest import Proxy
from tests.helpers import raw_tls_exchange
from tests.test_headers_everywhere import (
    MALFORMED,
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
