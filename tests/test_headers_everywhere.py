"""SPEC §2: every proxy-port response carries HSTS, X-Request-Id and nosniff; §6: problem+json."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDictProxy
from structlog.testing import capture_logs

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import free_port, raw_tls_exchange
from tests.responsesupport import (
    MALFORMED,
    ROUTES,
    SANE_ID,
    assert_problem,
    assert_security_headers,
    raw_security_headers,
)
from tests.upstream import UpstreamServer


async def chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    """A request body without Content-Length: aiohttp sends it chunked."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"c" * piece


@dataclass(frozen=True)
class Case:
    status: int
    path: str
    method: str = "GET"
    settings: dict[str, Any] = field(default_factory=dict)
    body: str | None = None  # "big" (Content-Length) or "chunked"
    problem: bool = True  # the proxy answers itself, in problem+json
    reaches_upstream: bool = False


CASES = [
    pytest.param(Case(200, "/public/ok", problem=False, reaches_upstream=True), id="200"),
    pytest.param(Case(401, "/v1/orders"), id="401-no-key"),
    pytest.param(Case(403, "/nowhere"), id="403-no-route"),
    pytest.param(
        Case(404, "/public/status/404", problem=False, reaches_upstream=True), id="404-upstream"
    ),
    pytest.param(
        Case(413, "/public/upload", "POST", {"limits": {"max_body_bytes": 1024}}, "big"),
        id="413-content-length",
    ),
    pytest.param(
        Case(413, "/public/upload", "POST", {"limits": {"max_body_bytes": 1024}}, "chunked"),
        id="413-chunked",
    ),
    pytest.param(Case(502, "/public/closed", settings={"upstream": "closed"}), id="502"),
    pytest.param(
        Case(504, "/public/hang", settings={"upstream": {"timeout_s": 0.3}}), id="504-timeout"
    ),
]


@pytest.mark.parametrize("case", CASES)
async def test_every_response_carries_the_security_headers(
    start_proxy: ProxyFactory, upstream: UpstreamServer, case: Case
) -> None:
    settings = dict(case.settings)
    if settings.get("upstream") == "closed":
        settings["upstream"] = {"url": f"http://127.0.0.1:{free_port()}"}
    proxy: Proxy = await start_proxy(routes=ROUTES, **settings)
    data: Any = None
    if case.body == "big":
        data = b"b" * 2048
    elif case.body == "chunked":
        data = chunks(64 * 1024)
    async with proxy.request(case.method, case.path, data=data) as response:
        body = await response.read()
        headers: CIMultiDictProxy[str] = response.headers
        assert response.status == case.status, body
    assert_security_headers(headers)
    if case.problem:
        assert_problem(body, headers["Content-Type"], case.status, headers["X-Request-Id"])
    if case.reaches_upstream:
        assert [seen.path for seen in upstream.seen] == [case.path]
    elif case.status == 413:
        # Content-Length: refused before reading; chunked: cut off, so the upstream never
        # sees a complete request.
        assert upstream.seen == []


async def test_401_challenges_for_a_bearer_key(start_proxy: ProxyFactory) -> None:
    proxy: Proxy = await start_proxy(routes=ROUTES)
    async with proxy.request("GET", "/v1/orders") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="sidecar"')


@pytest.mark.parametrize("payload", MALFORMED)
async def test_parser_level_400_carries_the_headers_and_closes(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext, payload: bytes
) -> None:
    response = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl)
    assert response.status == 400
    assert_security_headers(raw_security_headers(response))
    assert_problem(
        response.body, response.headers["content-type"], 400, response.headers["x-request-id"]
    )
    assert response.closed, "the connection stayed open after a malformed request"
    assert response.raw.count(b"HTTP/1.") == 1, "a smuggled second request was answered"
    assert upstream.seen == []


async def test_header_line_over_the_limit_gets_431(
    proxy: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext
) -> None:
    payload = b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n"
    response = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl)
    assert response.status == 431
    assert_security_headers(raw_security_headers(response))
    assert_problem(
        response.body, response.headers["content-type"], 431, response.headers["x-request-id"]
    )
    assert response.closed
    assert upstream.seen == []


async def test_header_block_over_the_limit_gets_431(proxy: Proxy, upstream: UpstreamServer) -> None:
    # 24 headers of 1 KiB: every line is under 16 KiB, the block is 24 KiB.
    headers = {f"X-Filler-{index}": "f" * 1024 for index in range(24)}
    async with proxy.request("GET", "/public/filler", headers=headers) as response:
        assert response.status == 431
    assert upstream.seen == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Bearer sk_live_id_TOPSECRET\x01\r\n\r\n",
            id="bad-character",
        ),
        pytest.param(
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Bearer sk_live_id_TOPSECRET" + b"a" * 17000 + b"\r\n\r\n",
            id="too-long",
        ),
        pytest.param(
            b"GET /public/x?key=sk_live_id_TOPSECRET HTTP/1.1 x\r\nHost: localhost\r\n\r\n",
            id="bad-request-line",
        ),
    ],
)
async def test_parser_errors_do_not_echo_the_request(
    proxy: Proxy,
    client_ssl: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
) -> None:
    """A malformed request may carry a key: it is not quoted back, nor logged."""
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        response = await raw_tls_exchange(proxy.server.proxy_port, payload, client_ssl)
    assert response.status in (400, 431)
    assert b"TOPSECRET" not in response.raw
    assert "TOPSECRET" not in caplog.text
    assert not any("TOPSECRET" in repr(event) for event in events)
    assert any(event.get("event") == "malformed request" for event in events)


async def test_sane_request_id_is_echoed_and_forwarded(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    sent = "trace-0123456789.abc_DEF"
    async with proxy.request("GET", "/public/id", headers={"X-Request-Id": sent}) as response:
        assert response.status == 200
        assert response.headers["X-Request-Id"] == sent
    assert upstream.seen[0].headers["X-Request-Id"] == sent


async def test_request_id_of_128_characters_is_kept(proxy: Proxy, upstream: UpstreamServer) -> None:
    sent = "a" * 128
    async with proxy.request("GET", "/public/id", headers={"X-Request-Id": sent}) as response:
        assert response.headers["X-Request-Id"] == sent


@pytest.mark.parametrize(
    "insane",
    [
        pytest.param("a" * 129, id="too-long"),
        pytest.param("has space", id="space"),
        pytest.param("semi;colon", id="semicolon"),
        pytest.param("<script>", id="angle-brackets"),
        pytest.param("a/b", id="slash"),
    ],
)
async def test_insane_request_id_is_replaced(
    proxy: Proxy, upstream: UpstreamServer, insane: str
) -> None:
    async with proxy.request("GET", "/public/id", headers={"X-Request-Id": insane}) as response:
        assert response.status == 200
        replaced = response.headers["X-Request-Id"]
    assert replaced != insane
    assert SANE_ID.match(replaced)
    assert upstream.seen[0].headers["X-Request-Id"] == replaced


async def test_error_request_id_matches_the_problem_body(start_proxy: ProxyFactory) -> None:
    proxy: Proxy = await start_proxy(routes=ROUTES)
    async with proxy.request("GET", "/nowhere", headers={"X-Request-Id": "abc-123"}) as response:
        document = await response.json(content_type=None)
        assert response.headers["X-Request-Id"] == "abc-123"
    assert document["request_id"] == "abc-123"


async def test_each_request_gets_its_own_generated_id(proxy: Proxy) -> None:
    ids = set()
    for _ in range(3):
        async with proxy.request("GET", "/public/id") as response:
            ids.add(response.headers["X-Request-Id"])
    assert len(ids) == 3
