"""Listeners, signals and graceful shutdown for one serving process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web, web_protocol

from sidecar.app import Sidecar, open_sidecar
from sidecar.config import Settings
from sidecar.errors import SidecarError
from sidecar.protocol import HardenedServer
from sidecar.tls import Certificate, create_server_context

log = structlog.get_logger("sidecar.server")


class StartupError(SidecarError):
    """The process cannot start serving (a port taken, a parser missing)."""


def check_c_parser() -> None:
    """Refuse the pure-Python HTTP parser: the C one is the one hardened against smuggling."""
    parser = web_protocol.HttpRequestParser  # type: ignore[attr-defined]
    if parser.__module__ != "aiohttp._http_parser":
        raise StartupError(
            "aiohttp is running without its C HTTP parser (AIOHTTP_NO_EXTENSIONS set, or no "
            "wheel for this platform); reinstall aiohttp from a binary wheel"
        )


@dataclass(slots=True)
class Running:
    """A serving process: its parts and the ports it actually bound."""

    sidecar: Sidecar
    proxy_port: int
    health_port: int
    _proxy: web.BaseRunner
    _health: web.BaseRunner

    async def shutdown(self) -> None:
        """SPEC §11: not ready at once, serve for drain_s, stop accepting, finish within grace_s."""
        settings = self.sidecar.settings.shutdown
        self.sidecar.lifecycle.draining = True
        log.info("draining", drain_s=settings.drain_s, grace_s=settings.grace_s)
        # The drain window is a deliberate wait: load balancers need it to see /readyz fail.
        await asyncio.sleep(settings.drain_s)
        self.sidecar.lifecycle.closed = True
        await self._proxy.cleanup()  # stops accepting; in-flight requests get grace_s
        await self._health.cleanup()
        log.info("stopped")


@asynccontextmanager
async def running(settings: Settings, certificate: Certificate) -> AsyncIterator[Running]:
    """Bind both listeners and serve until the context exits (or `Running.shutdown`)."""
    ssl_context = create_server_context(settings.tls)
    async with open_sidecar(settings, certificate) as sidecar:
        health = web.AppRunner(sidecar.health_app, access_log=None, shutdown_timeout=1)
        proxy_server = HardenedServer(
            sidecar.pipeline.handle,
            security_headers=sidecar.security_headers,
            header_timeout_s=settings.limits.header_timeout_s,
            max_connections=settings.limits.max_connections,
            handler_cancellation=True,  # a client that goes away cancels its upstream request
            access_log=None,  # one structured line per request comes from the pipeline
            auto_decompress=False,  # compressed bodies are forwarded as they are
            keepalive_timeout=settings.limits.keepalive_s,
            max_field_size=settings.limits.max_header_bytes,
            max_line_size=settings.limits.max_header_bytes,
        )
        proxy = web.ServerRunner(proxy_server, shutdown_timeout=settings.shutdown.grace_s)
        await health.setup()
        await proxy.setup()
        try:
            health_port = await _bind(health, settings.health.address, settings.health.port)
            proxy_port = await _bind(
                proxy, settings.listen.address, settings.listen.port, ssl_context=ssl_context
            )
            yield Running(sidecar, proxy_port, health_port, proxy, health)
        finally:
            await proxy.cleanup()
            await health.cleanup()


async def _bind(runner: web.BaseRunner, host: str, port: int, **kwargs: object) -> int:
    site = web.TCPSite(runner, host, port, backlog=1024, **kwargs)  # type: ignore[arg-type]
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return int(runner.addresses[-1][1])


async def serve(settings: Settings, certificate: Certificate) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    check_c_parser()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings, certificate) as server:
        log.info(
            "listening",
            proxy=f"https://{settings.listen.address}:{server.proxy_port}",
            health=f"http://{settings.health.address}:{server.health_port}",
            upstream=settings.upstream.url,
        )
        await stop.wait()
        await server.shutdown()
