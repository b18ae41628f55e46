"""A small answer leaves in one TLS record: head and body in one write (issue 16).

The client here does TLS by hand (`ssl.MemoryBIO`) so that it sees the records as they came
off the wire, and counts those that carried part of the answer."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from tests.conftest import ProxyFactory

_APPLICATION_DATA = 23
_HEADER = 5  # content type, version (2), length (2)


class RecordCountingClient:
    """A TLS client over a plain socket that counts the records carrying answer bytes."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
    ) -> None:
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname="localhost")
        self._wire = bytearray()

    async def handshake(self, deadline: float) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                self._incoming.write(await self._read(deadline))
        await self._flush()

    async def exchange(self, request: bytes, deadline: float) -> tuple[bytes, int]:
        """Send `request`; the answer (head and Content-Length body) and how many records
        carried it. Session tickets and other records with no answer bytes are not counted."""
        self._tls.write(request)
        await self._flush()
        answer, records = bytearray(), 0
        while not _complete(answer):
            record = await self._record(deadline)
            self._incoming.write(record)
            plain = self._plaintext()
            if plain:
                assert record[0] == _APPLICATION_DATA
                records += 1
                answer += plain
        return bytes(answer), records

    def _plaintext(self) -> bytes:
        out = bytearray()
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk

    async def _record(self, deadline: float) -> bytes:
        while len(self._wire) < _HEADER or len(self._wire) < _HEADER + _length(self._wire):
            self._wire += await self._read(deadline)
        size = _HEADER + _length(self._wire)
        record = bytes(self._wire[:size])
        del self._wire[:size]
        return record

    async def _read(self, deadline: float) -> bytes:
        data = await asyncio.wait_for(self._reader.read(65536), deadline - time.monotonic())
        assert data, "the server closed the connection"
        return data

    async def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._writer.write(pending)
            await self._writer.drain()


def _length(wire: bytearray) -> int:
    return int.from_bytes(wire[3:5], "big")


def _complete(answer: bytearray) -> bool:
    head, found, body = bytes(answer).partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True  # no body (a 204, or a head-only answer)


@pytest.fixture
async def counting(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> tuple[RecordCountingClient, asyncio.StreamWriter]:
    proxy = await start_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.proxy_port)
    client = RecordCountingClient(reader, writer, client_ssl)
    await client.handshake(time.monotonic() + 5)
    return client, writer


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


async def test_a_small_forwarded_answer_is_one_record_each_time(
    counting: tuple[RecordCountingClient, asyncio.StreamWriter],
) -> None:
    client, writer = counting
    try:
        for attempt in range(3):  # a kept-alive connection: every answer, not just the first
            answer, records = await client.exchange(
                _get(f"/public/small/{attempt}"), time.monotonic() + 5
            )
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b"strict-transport-security" in answer.lower()
            assert records == 1, answer
    finally:
        writer.close()


async def test_a_bodiless_answer_is_one_record(
    counting: tuple[RecordCountingClient, asyncio.StreamWriter],
) -> None:
    client, writer = counting
    try:
        answer, records = await client.exchange(_get("/public/status/204"), time.monotonic() + 5)
        assert answer.startswith(b"HTTP/1.1 204 ")
        assert records == 1, answer
    finally:
        writer.close()
