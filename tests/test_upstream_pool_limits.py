"""The upstream pool's limits: a stale keep-alive connection retried only for a body that can
be sent again, `max_connections` with requests queueing, `timeout_s` → 504, and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvloop

from sidecar.errors import UpstreamUnavailable
from sidecar.proxy.pool import UpstreamPool
from sidecar.proxy.wire import request_head
from tests.conftest import ProxyFactory
from tests.helpers import wait_until
from tests.rawupstream import OK, RawUpstream, start, status_of


async def test_a_stale_connection_is_retried_for_an_idempotent_bytes_body(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    raw.drop_second = True  # keep-alive advertised, then the second request is never answered
    proxy = await start(start_proxy, raw)
    assert await status_of(proxy, "/public/a", method="PUT", json={"n": 1}) == 200
    assert await status_of(proxy, "/public/b", method="PUT", json={"n": 2}) == 200
    assert raw.accepted == 2  # the retry's new connection
    assert [r.rpartition(b"\r\n")[2] for r in raw.requests] == [b'{"n": 1}', b'{"n": 2}']


async def test_a_post_on_a_stale_connection_is_not_sent_twice(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    raw.drop_second = True  # the upstream may have acted on what it read before closing
    proxy = await start(start_proxy, raw)
    assert await status_of(proxy, "/public/a", method="POST", json={"n": 1}) == 200
    assert await status_of(proxy, "/public/b", method="POST", json={"n": 2}) == 502
    assert raw.accepted == 1


async def test_a_stale_connection_is_not_retried_for_a_streamed_body(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    raw.drop_second = True
    proxy = await start(start_proxy, raw)

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed once"

    headers = {"Content-Type": "application/octet-stream"}
    assert await status_of(proxy, "/public/a", method="POST", data=b"x", headers=headers) == 200
    assert await status_of(proxy, "/public/b", method="POST", data=body(), headers=headers) == 502
    assert raw.accepted == 1  # not sent again: the body is gone


async def test_a_fresh_connection_that_fails_is_not_retried(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    async def hang_up(_writer: asyncio.StreamWriter) -> bool:
        return False

    raw.replies["/public/gone"] = hang_up
    proxy = await start(start_proxy, raw)
    assert await status_of(proxy, "/public/gone", method="POST", json={}) == 502
    assert raw.accepted == 1


async def test_requests_past_max_connections_wait_for_one(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    async def held(writer: asyncio.StreamWriter) -> bool:
        await raw.release.wait()
        writer.write(OK)
        await writer.drain()
        return True

    raw.replies["/public/held"] = held
    proxy = await start(start_proxy, raw, max_connections=2)
    requests = [asyncio.create_task(status_of(proxy, "/public/held")) for _ in range(5)]

    async def two_in_flight() -> bool:
        return len(raw.requests) == 2

    await wait_until(two_in_flight, within=5)
    assert raw.accepted == 2  # the other three wait for a connection, none is opened
    raw.release.set()
    assert await asyncio.gather(*requests) == [200] * 5
    assert raw.accepted == 2
    assert len(raw.requests) == 5


async def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    start_proxy: ProxyFactory, raw: RawUpstream
) -> None:
    async def silent(_writer: asyncio.StreamWriter) -> bool:
        await raw.release.wait()
        return False

    async def stalls_mid_body(writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await raw.release.wait()
        return False

    raw.replies["/public/silent"] = silent
    raw.replies["/public/stall"] = stalls_mid_body
    proxy = await start(start_proxy, raw, timeout_s=0.3)
    assert await status_of(proxy, "/public/silent") == 504
    assert await status_of(proxy, "/public/stall") == 504
    assert await status_of(proxy, "/public/x") == 200  # on a connection of its own
    assert raw.accepted == 3


def test_the_pool_runs_on_uvloop() -> None:
    """`serve` runs on uvloop, whose transports are not asyncio's classes."""

    async def scenario() -> tuple[list[int], int]:
        upstream = RawUpstream()
        server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(
            "127.0.0.1", port, ssl_context=None, max_connections=1, connect_timeout_s=2
        )
        statuses = []
        async with server:
            for _ in range(3):
                connection = await pool.acquire()
                head = request_head("GET", "/", [("Host", "x")], content_length=None, chunked=False)
                connection.send(head)
                answer = await asyncio.wait_for(connection.read_head(), 5)
                assert await asyncio.wait_for(connection.read_chunk(), 5) == b"ok"
                assert await connection.read_chunk() == b""
                statuses.append(answer.status)
                pool.release(connection)
            await pool.close()
        return statuses, upstream.accepted

    assert uvloop.run(scenario()) == ([200, 200, 200], 1)


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_a_header_that_would_break_the_request_head_is_refused(value: str) -> None:
    with pytest.raises(UpstreamUnavailable):
        request_head("GET", "/", [("X-A", value)], content_length=None, chunked=False)


def test_the_request_head_frames_the_body_it_is_sent_with() -> None:
    head = request_head(
        "POST",
        "/p?q",
        [("Content-Length", "99"), ("X-A", "é\tok")],
        content_length=3,
        chunked=False,
    )
    assert head == "POST /p?q HTTP/1.1\r\nX-A: é\tok\r\nContent-Length: 3\r\n\r\n".encode()
