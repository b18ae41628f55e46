"""SPEC §6: "a slow client or upstream never makes the proxy buffer an unbounded amount."
A peer that stops reading must hold the other side back (TCP flow control all the way through
the proxy), not have the proxy take everything into memory on its behalf.

The measure is how far the sending side gets before it is blocked. The kernel's socket buffers
on the way hold some of it whatever the proxy does, so "bounded" is tested as "no more than those
buffers plus a few MiB", with several times that on offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Proxy, ProxyFactory
from tests.faults.peers import RawUpstream, raw_upstream
from tests.helpers import wait_until

MIB = 1024 * 1024


def kernel_buffering() -> int:
    """The most the kernel may hold of one stream through the proxy: a send buffer and a
    receive buffer (their autotuning maximum) on each of its two connections."""
    try:
        limits = [
            int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
            for name in ("tcp_rmem", "tcp_wmem")
        ]
    except (OSError, IndexError, ValueError):
        return 64 * MIB  # not Linux: a generous guess
    return 2 * sum(limits)


BOUND = kernel_buffering() + 16 * MIB  # what the proxy itself may hold: a few MiB at most
OFFERED = max(256 * MIB, 4 * BOUND)
CHUNK = b"f" * 65536
STALLED_FOR_S = 0.5  # no progress for this long: the sender is blocked


@dataclass
class Progress:
    sent: int = 0
    last_progress: float = field(default_factory=time.monotonic)

    def add(self, count: int) -> None:
        self.sent += count
        self.last_progress = time.monotonic()

    async def stalled(self) -> bool:
        return time.monotonic() - self.last_progress > STALLED_FOR_S


async def test_a_client_that_stops_reading_holds_the_upstream_back(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    progress = Progress()

    async def firehose(
        _state: RawUpstream, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % OFFERED)
        for _ in range(OFFERED // len(CHUNK)):
            writer.write(CHUNK)
            await writer.drain()
            progress.add(len(CHUNK))

    async with raw_upstream(firehose) as upstream:
        proxy: Proxy = await start_proxy(upstream={"url": upstream.url, "timeout_s": 30})
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.server.proxy_port, ssl=client_ssl, server_hostname="localhost"
        )
        try:
            writer.write(b"GET /public/big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(upstream.entered.wait(), 5)
            # The client reads nothing from here on.
            await wait_until(progress.stalled, within=15, interval=0.05)
            assert progress.sent < BOUND, f"the upstream pushed {progress.sent >> 20} MiB"
        finally:
            writer.transport.abort()


async def test_an_upstream_that_stops_reading_holds_the_client_back(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    async def never_read(
        state: RawUpstream, _reader: asyncio.StreamReader, _writer: asyncio.StreamWriter
    ) -> None:
        await state.cue.wait()  # the request head is in; its body is never read

    async with raw_upstream(never_read) as upstream:
        proxy: Proxy = await start_proxy(
            upstream={"url": upstream.url, "timeout_s": 30},
            limits={"max_body_bytes": OFFERED},  # a body the proxy accepts, so it streams
        )
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.server.proxy_port, ssl=client_ssl, server_hostname="localhost"
        )
        progress = Progress()

        async def upload() -> None:
            writer.write(
                b"POST /public/upload HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % OFFERED
            )
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                for _ in range(OFFERED // len(CHUNK)):
                    writer.write(CHUNK)
                    await writer.drain()
                    progress.add(len(CHUNK))

        uploading = asyncio.create_task(upload())
        try:
            await asyncio.wait_for(upstream.entered.wait(), 5)
            await wait_until(progress.stalled, within=15, interval=0.05)
            assert progress.sent < BOUND, f"the client pushed {progress.sent >> 20} MiB"
            assert not uploading.done()
        finally:
            writer.transport.abort()
            uploading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uploading
