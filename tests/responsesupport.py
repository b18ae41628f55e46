"""What every proxy-port response must carry (SPEC §2: HSTS, X-Request-Id, nosniff; §6: a
problem+json body), and the malformed requests (SPEC §12) that must get a 400 and a closed
connection; shared by the header tests and the request-smuggling faults."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import pytest

from tests.helpers import PROBLEM_FIELDS, RawResponse

HSTS = "max-age=31536000; includeSubDomains"
SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ROUTES = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/**", "scopes": ["orders:read"]},
]


def assert_security_headers(headers: Mapping[str, str]) -> None:
    assert headers.get("Strict-Transport-Security") == HSTS
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert SANE_ID.match(headers.get("X-Request-Id", "")), headers


def assert_problem(body: bytes, content_type: str, status: int, request_id: str) -> None:
    assert content_type.split(";")[0].strip() == "application/problem+json"
    document = json.loads(body)
    assert set(document) == PROBLEM_FIELDS
    assert document["status"] == status
    assert document["request_id"] == request_id
    assert isinstance(document["type"], str)
    assert document["type"]
    assert isinstance(document["title"], str)
    assert document["title"]
    assert isinstance(document["detail"], str)


SMUGGLING = (
    b"POST /public/smuggle HTTP/1.1\r\n"
    b"Host: localhost\r\n"
    b"Content-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"0\r\n\r\n"
    b"GET /public/second HTTP/1.1\r\nHost: localhost\r\n\r\n"
)

# SPEC §12: malformed requests get 400, the connection is closed, nothing reaches the upstream.
MALFORMED = [
    pytest.param(SMUGGLING, id="content-length-and-transfer-encoding"),
    pytest.param(
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        id="duplicate-content-length",
    ),
    pytest.param(
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        id="bad-chunk-size",
    ),
    pytest.param(
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\n"
        b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        id="transfer-encoding-twice",
    ),
    pytest.param(
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n", id="obs-fold"
    ),
    pytest.param(b"GET /public/x HTTP/1.1\nHost: localhost\n\n", id="bare-lf"),
    pytest.param(b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n", id="bare-cr"),
    pytest.param(
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\nhello",
        id="space-before-colon",
    ),
]


def raw_security_headers(response: RawResponse) -> dict[str, str]:
    return {
        name: response.headers.get(name.lower(), "")
        for name in ("Strict-Transport-Security", "X-Content-Type-Options", "X-Request-Id")
    }
