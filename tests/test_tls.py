"""SPEC §2.1 and §3: the proxy port speaks TLS 1.2+ only, and never plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_exchange
from tests.upstream import UpstreamServer

HANDSHAKE_TIMEOUT_S = 3.0


def assert_refused_by_server(failure: BaseException) -> None:
    """The handshake failed on the server's side: an alert or a dropped connection.

    asyncio's TLS server aborts the transport on a failed handshake, so the client often
    sees a reset rather than the protocol_version alert. What must not happen is a client
    that gave up by itself, offering nothing (the control tests rule that out too).
    """
    assert isinstance(failure, ssl.SSLError | ConnectionResetError), repr(failure)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(failure).upper()


def client_context(
    ca: trustme.CA, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion
) -> ssl.SSLContext:
    """A client that really offers the versions asked for, however old."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1 too; offering them is this test's whole point.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
        context.maximum_version = maximum
    if maximum < ssl.TLSVersion.TLSv1_2:
        # OpenSSL 3 refuses TLS 1.0/1.1 at its default security level: lower it so the
        # handshake fails on the server's side, for the server's reason.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, str | None]:
    """Complete a TLS handshake; return (negotiated version, ALPN protocol)."""
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"),
        HANDSHAKE_TIMEOUT_S,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return ssl_object.version(), ssl_object.selected_alpn_protocol()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)


@pytest.fixture
async def permissive_port(cert_files: tuple[Path, Path]) -> AsyncIterator[int]:
    """A TLS server that accepts TLS 1.0+: proof that the old-version clients really offer it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(str(cert_files[0]), str(cert_files[1]))

    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


OLD_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1, "TLSv1", id="TLSv1.0"),
    pytest.param(ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1, "TLSv1.1", id="TLSv1.1"),
    pytest.param(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, "TLSv1.1", id="TLSv1.0-1.1"),
]


@pytest.mark.parametrize(("minimum", "maximum", "expected"), OLD_VERSIONS)
async def test_old_client_does_offer_the_old_version(
    ca: trustme.CA,
    permissive_port: int,
    minimum: ssl.TLSVersion,
    maximum: ssl.TLSVersion,
    expected: str,
) -> None:
    """Control for the refusal test below: the same client succeeds where old TLS is allowed."""
    negotiated, _alpn = await handshake(permissive_port, client_context(ca, minimum, maximum))
    assert negotiated == expected


@pytest.mark.parametrize(("minimum", "maximum", "expected"), OLD_VERSIONS)
async def test_tls_below_1_2_fails_the_handshake(
    proxy: Proxy,
    ca: trustme.CA,
    upstream: UpstreamServer,
    minimum: ssl.TLSVersion,
    maximum: ssl.TLSVersion,
    expected: str,
) -> None:
    del expected  # the version the control negotiated; here nothing is
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as failure:
        await handshake(proxy.server.proxy_port, client_context(ca, minimum, maximum))
    assert_refused_by_server(failure.value)
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("version", "expected"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
async def test_tls_1_2_and_1_3_succeed(
    proxy: Proxy,
    ca: trustme.CA,
    version: ssl.TLSVersion,
    expected: str,
) -> None:
    context = client_context(ca, version, version)
    negotiated, _alpn = await handshake(proxy.server.proxy_port, context)
    assert negotiated == expected
    response = await raw_exchange(
        proxy.server.proxy_port,
        b"GET /public/tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ssl_context=context,
    )
    assert response.status == 200


async def test_min_version_1_3_refuses_a_1_2_only_client(
    start_proxy: ProxyFactory, ca: trustme.CA
) -> None:
    proxy: Proxy = await start_proxy(tls={"min_version": "1.3"})
    only_1_2 = client_context(ca, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as failure:
        await handshake(proxy.server.proxy_port, only_1_2)
    assert_refused_by_server(failure.value)
    modern = client_context(ca, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    negotiated, _alpn = await handshake(proxy.server.proxy_port, modern)
    assert negotiated == "TLSv1.3"


async def test_plain_http_on_the_tls_port_gets_no_http_answer(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    response = await raw_exchange(
        proxy.server.proxy_port,
        b"GET /public/plain HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ssl_context=None,
    )
    assert b"HTTP/" not in response.raw
    assert response.closed, "the connection was left open"
    if response.raw:
        # Anything sent back must be a TLS record (an alert), never HTTP.
        assert response.raw[0] == 0x15, response.raw[:16]
    assert upstream.seen == []


async def test_alpn_selects_http_1_1(proxy: Proxy, ca: trustme.CA) -> None:
    context = client_context(ca, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    context.set_alpn_protocols(["h2", "http/1.1"])
    _version, alpn = await handshake(proxy.server.proxy_port, context)
    assert alpn == "http/1.1"
