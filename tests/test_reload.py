"""SIGHUP reloads the certificate and the routes without dropping live connections (SPEC §11);
a bad new configuration changes nothing. And the C-parser guard at start-up (SPEC §12)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import (
    free_port,
    run_cli,
    sidecar_env,
    sidecar_process,
    wait_ready,
    wait_until,
    write_config,
)
from tests.upstream import UpstreamServer


def _issue(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


async def _status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@pytest.mark.slow
async def test_sighup_reloads_certificate_and_routes_and_keeps_connections(
    tmp_path: Path,
    ca: trustme.CA,
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    proxy_port, health_port = free_port(), free_port()
    first = _issue(ca, tmp_path, "first")
    second = _issue(ca, tmp_path, "second")

    def document(cert: tuple[Path, Path], routes: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "listen": {"address": "127.0.0.1", "port": proxy_port},
            "health": {"address": "127.0.0.1", "port": health_port},
            "tls": {"cert_file": str(cert[0]), "key_file": str(cert[1])},
            "upstream": {"url": upstream.url},
            "redis": {"url": redis_server.url},
            "audit": {"spool_dir": str(tmp_path / "spool")},
            "routes": routes,
            "shutdown": {"drain_s": 0, "grace_s": 2},
        }

    public = [{"path": "/public/**", "public": True}]
    config = write_config(tmp_path / "sidecar.yaml", document(first, public))
    base = f"https://localhost:{proxy_port}"
    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=1)
    async with (
        sidecar_process(config, tmp_path / "sidecar.log") as sidecar,
        aiohttp.ClientSession(connector=connector) as session,
        aiohttp.ClientSession() as health,
    ):
        await wait_ready(sidecar, health, health_port)
        assert await _status(session, base + "/public/before") == 200
        assert await _status(session, base + "/extra/x") == 403
        first_cert = await _peer_certificate(proxy_port, client_ssl)
        # A connection opened before the reload, kept alive across it.
        live_reader, live_writer = await asyncio.open_connection(
            "127.0.0.1", proxy_port, ssl=client_ssl, server_hostname="localhost"
        )

        write_config(config, document(second, [*public, {"path": "/extra/**", "public": True}]))
        sidecar.process.send_signal(signal.SIGHUP)

        async def extra_route_served() -> bool:
            return await _status(session, base + "/extra/x") == 200

        await wait_until(extra_route_served, within=10)
        assert await _peer_certificate(proxy_port, client_ssl) != first_cert
        live_writer.write(b"GET /public/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await live_writer.drain()
        head = await asyncio.wait_for(live_reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 200"), head
        live_writer.close()

        # A broken file: refused, logged, and the running configuration stays.
        config.write_text("routes: [unclosed\n", encoding="utf-8")
        sidecar.process.send_signal(signal.SIGHUP)

        async def refusal_logged() -> bool:
            return "reload refused" in sidecar.log()

        await wait_until(refusal_logged, within=10)
        assert await _status(session, base + "/extra/x") == 200
        assert sidecar.process.returncode is None
        sidecar.process.send_signal(signal.SIGTERM)
        assert await sidecar.wait_exit(10) == 0


def test_serve_refuses_the_pure_python_parser(
    tmp_path: Path, cert_files: tuple[Path, Path], redis_server: EmbeddedRedis
) -> None:
    health_port = free_port()
    config = write_config(
        tmp_path / "sidecar.yaml",
        {
            "listen": {"address": "127.0.0.1", "port": free_port()},
            "health": {"address": "127.0.0.1", "port": health_port},
            "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            "upstream": {"url": "http://127.0.0.1:9"},
            "redis": {"url": redis_server.url},
        },
    )
    result = run_cli("serve", "--config", str(config), env=sidecar_env(AIOHTTP_NO_EXTENSIONS="1"))
    assert result.returncode == 1, result.stderr
    assert "C HTTP parser" in result.stderr
    assert "Traceback" not in result.stderr
