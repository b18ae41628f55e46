"""Listeners, signals and graceful shutdown for one serving process."""

from __future__ import annotations

import asyncio
import gc
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web, web_protocol

from sidecar.config import Settings, load_settings
from sidecar.errors import ConfigError, SidecarError
from sidecar.proxy.hardened import HardenedAppRunner, HardenedServer
from sidecar.proxy.routes import RouteTable
from sidecar.runtime.app import Sidecar, open_sidecar
from sidecar.runtime.tls import Certificate, check_certificate, create_server_context

log = structlog.get_logger("sidecar.server")


class StartupError(SidecarError):
    """The process cannot start serving (a port taken, a parser missing)."""


_LINGERING_S = 10.0  # aiohttp's default


def check_c_parser() -> None:
    """Refuse the pure-Python HTTP parser: the C one is the one hardened against smuggling."""
    parser = web_protocol.HttpRequestParser  # type: ignore[attr-defined]
    if parser.__module__ != "aiohttp._http_parser":
        raise StartupError(
            "aiohttp is running without its C HTTP parser (AIOHTTP_NO_EXTENSIONS set, or no "
            "wheel for this platform); reinstall aiohttp from a binary wheel"
        )


GC_THRESHOLD = 50_000

# What SIGHUP can change without dropping a connection; anything else needs a restart.
RELOADABLE = frozenset({"tls", "routes", "default_route"})


@dataclass(slots=True)
class Running:
    """A serving process: its parts and the ports it actually bound."""

    sidecar: Sidecar
    proxy_port: int
    health_port: int
    _proxy: web.BaseRunner
    _health: web.BaseRunner
    _ssl_context: ssl.SSLContext
    admin_port: int | None = None  # bound only with `admin.enabled`
    _admin: web.BaseRunner | None = None

    def reload(self, path: Path) -> bool:
        """SIGHUP: take the certificate and routes from the file anew. Live connections keep
        going; new handshakes get the new certificate. A bad file changes nothing."""
        old = self.sidecar.settings
        try:
            new = load_settings(path)
            certificate = check_certificate(new.tls)
            create_server_context(new.tls)  # the whole TLS setup is proven before it is used
            routes = RouteTable(new.routes, new.default_route)
        except ConfigError as exc:
            log.error("reload refused; the running configuration stays", problems=exc.problems)
            return False
        self._ssl_context.load_cert_chain(str(new.tls.cert_file), str(new.tls.key_file))
        self.sidecar.pipeline.replace_routes(routes)
        self.sidecar.certificate = certificate
        self.sidecar.settings = old.model_copy(
            update={name: getattr(new, name) for name in RELOADABLE}
        )
        ignored = sorted(
            name
            for name in type(new).model_fields
            if name not in RELOADABLE and getattr(new, name) != getattr(old, name)
        )
        if new.tls.min_version != old.tls.min_version:
            ignored.append("tls.min_version")
        log.info(
            "reloaded",
            routes=len(new.routes),
            certificate_expires=certificate.not_after.isoformat(),
            needs_restart=ignored or None,
        )
        return True

    async def shutdown(self) -> None:
        """SPEC §11: not ready at once, serve for drain_s, stop accepting, finish within grace_s."""
        settings = self.sidecar.settings.shutdown
        self.sidecar.lifecycle.draining = True
        log.info("draining", drain_s=settings.drain_s, grace_s=settings.grace_s)
        # The drain window is a deliberate wait: load balancers need it to see /readyz fail.
        await asyncio.sleep(settings.drain_s)
        self.sidecar.lifecycle.closed = True
        await self._proxy.cleanup()  # stops accepting; in-flight requests get grace_s
        if self._admin is not None:
            await self._admin.cleanup()
        await self._health.cleanup()
        log.info("stopped")


@asynccontextmanager
async def running(
    settings: Settings,
    certificate: Certificate,
    *,
    reuse_port: bool = False,
    metrics_dir: Path | None = None,
) -> AsyncIterator[Running]:
    """Bind both listeners and serve until the context exits (or `Running.shutdown`).

    `reuse_port`: several worker processes bind the same ports (SO_REUSEPORT) and the kernel
    spreads connections over them."""
    ssl_context = create_server_context(settings.tls)
    async with open_sidecar(settings, certificate, metrics_dir=metrics_dir) as sidecar:
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
            # After an answer that left the body unread (413, 408), aiohttp reads and discards
            # the rest so the client sees the answer; a client that stalls gets no longer for
            # that than it would for the next byte of a body it is sending.
            lingering_time=min(_LINGERING_S, settings.limits.body_timeout_s),
        )
        proxy = web.ServerRunner(proxy_server, shutdown_timeout=settings.shutdown.grace_s)
        admin = None
        if sidecar.admin_app is not None:
            # Hardened like the proxy port: a malformed head is answered without echoing it
            # (it can hold the admin key), with HSTS, and a slow head is cut off.
            admin = HardenedAppRunner(
                sidecar.admin_app,
                security_headers={**sidecar.security_headers, "Cache-Control": "no-store"},
                header_timeout_s=settings.limits.header_timeout_s,
                max_connections=settings.limits.max_connections,
                access_log=None,
                shutdown_timeout=settings.shutdown.grace_s,
                keepalive_timeout=settings.limits.keepalive_s,
                max_field_size=settings.limits.max_header_bytes,
                max_line_size=settings.limits.max_header_bytes,
            )
            await admin.setup()
        await health.setup()
        await proxy.setup()
        try:
            health_port = await _bind(
                health, settings.health.address, settings.health.port, reuse_port=reuse_port
            )
            proxy_port = await _bind(
                proxy,
                settings.listen.address,
                settings.listen.port,
                ssl_context=ssl_context,
                reuse_port=reuse_port,
            )
            admin_port = None
            if admin is not None:
                # The proxy's certificate and SSL context: one SIGHUP reload renews both.
                admin_port = await _bind(
                    admin,
                    settings.admin.address,
                    settings.admin.port,
                    ssl_context=ssl_context,
                    reuse_port=reuse_port,
                )
            yield Running(
                sidecar, proxy_port, health_port, proxy, health, ssl_context, admin_port, admin
            )
        finally:
            await proxy.cleanup()
            if admin is not None:
                await admin.cleanup()
            await health.cleanup()


async def _bind(runner: web.BaseRunner, host: str, port: int, **kwargs: object) -> int:
    site = web.TCPSite(runner, host, port, backlog=1024, **kwargs)  # type: ignore[arg-type]
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return int(runner.addresses[-1][1])


async def serve(
    settings: Settings,
    certificate: Certificate,
    config_file: Path,
    *,
    reuse_port: bool = False,
    metrics_dir: Path | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(
        settings, certificate, reuse_port=reuse_port, metrics_dir=metrics_dir
    ) as server:
        # Everything built so far lives as long as the process: keep the collector off it,
        # and let it run less often (a request allocates a few hundred short-lived objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        loop.add_signal_handler(signal.SIGHUP, server.reload, config_file)
        log.info(
            "listening",
            proxy=f"https://{settings.listen.address}:{server.proxy_port}",
            health=f"http://{settings.health.address}:{server.health_port}",
            admin=None
            if server.admin_port is None
            else f"https://{settings.admin.address}:{server.admin_port}",
            upstream=settings.upstream.url,
        )
        await stop.wait()
        await server.shutdown()
