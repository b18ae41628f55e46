"""`sidecar demo`: the whole thing on one machine in seconds, for a newcomer to poke at.

Redis and the audit archive's PostgreSQL are the configured ones when they are set (and, for
Redis, answer); otherwise real servers the demo starts in a temporary folder and stops on exit.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from aiohttp import web

from sidecar.audit.crypto import generate_key_line
from sidecar.config import Health, Listen, Redis, Route, Settings, Shutdown, Tls, Upstream
from sidecar.config.url_credentials import mask_url_credentials
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.scopes import ADMIN_SCOPES
from sidecar.keys.store import KeyStore
from sidecar.runtime.selfsigned import write_self_signed
from sidecar.runtime.serve import running
from sidecar.runtime.tls import check_certificate
from sidecar.storage.client import create_redis, redacted_url
from sidecar.storage.embedded import EmbeddedRedis
from sidecar.storage.embedded_postgres import EmbeddedPostgres, find_postgres_bin
from sidecar.storage.failures import tolerate_redis

DEMO_ROUTES = [
    Route(path="/public/**", public=True),
    Route(path="/v1/orders/**", methods=["GET", "HEAD"], scopes=["orders:read"]),
    Route(
        path="/v1/orders/**", methods=["POST", "PUT", "PATCH", "DELETE"], scopes=["orders:write"]
    ),
]


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "upstream": "sidecar demo echo",
            "method": request.method,
            "path": request.path_qs,
            "headers": {k: v for k, v in request.headers.items() if k.lower().startswith("x-")},
            "body": body.decode("utf-8", errors="replace"),
        }
    )


@asynccontextmanager
async def echo_upstream() -> AsyncIterator[str]:
    """A tiny upstream on a free loopback port that echoes what reaches it."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _send_rejected(proxy: str, cert_file: Path, demo_key: str) -> None:
    """A few refused requests (no key, a wrong one, a missing scope), so the dashboard's
    activity page has something to show from the first second."""
    ssl_context = ssl.create_default_context(cafile=str(cert_file))
    attempts: list[tuple[str, dict[str, str]]] = [
        ("GET", {}),
        ("GET", {"Authorization": "Bearer not-a-key"}),
        ("POST", {"Authorization": f"Bearer {demo_key}"}),  # 403: orders:write missing
    ]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context), timeout=aiohttp.ClientTimeout(total=5)
    ) as session:
        for method, headers in attempts:
            async with session.request(method, f"{proxy}/v1/orders/42", headers=headers):
                pass


async def _redis_answers(settings: Redis) -> bool:
    client = create_redis(settings)
    try:
        with tolerate_redis() as call:
            await client.ping()
    finally:
        await client.aclose()
    return not call.failed


async def _issue_demo_key(
    settings: Settings, kind: str = "demo", scopes: tuple[str, ...] = ("orders:read",)
) -> str:
    client = create_redis(settings.redis)
    try:
        new = await KeyStore(client).create(
            name=f"{kind}-{secrets.token_hex(3)}",
            scopes=list(scopes),
            prefix=settings.keys.prefix,
            environment=settings.keys.environment,
            hasher=SecretHasher(settings.keys.argon2),
            expires_at=time.time() + 86400,
            service="demo",
        )
    finally:
        await client.aclose()
    return new.key


def _archive_url(stack: AsyncExitStack, base: Settings) -> tuple[str | None, str]:
    """(the archive's URL, how it came to be): the configured one, else a PostgreSQL started
    for the demo; None, and why, when there is no server to start (the demo runs without)."""
    if base.archive.url is not None:
        return base.archive.url, ""
    try:
        server = stack.enter_context(EmbeddedPostgres(bin_dir=find_postgres_bin()))
    except FileNotFoundError as exc:
        return None, f"none: {exc}"
    return server.create_database("sidecar"), " (embedded, stopped on exit)"


def _reading_config(workdir: Path, settings: Settings) -> Path:
    """A configuration for the reading commands (`audit query`, `archive status`) pointing at
    this demo's Redis and archive, with the audit settings they decrypt and verify with."""
    audit = settings.audit
    document: dict[str, Any] = {
        "redis": {"url": settings.redis.url},
        "archive": {"url": settings.archive.url},
        "audit": {"stream": audit.stream, "events_stream": audit.events_stream},
    }
    for name in ("encryption_key_file", "integrity_key_file"):
        if getattr(audit, name) is not None:
            document["audit"][name] = str(getattr(audit, name))
    path = workdir / "read.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _demo_key_file(workdir: Path, base: Settings) -> Path:
    """The audit encryption key file: the configured one, else a fresh one for this demo, so
    the records are encrypted at rest and MAC'd (`audit verify` checks them with it)."""
    configured = base.audit.encryption_key_file
    if configured is not None:
        return configured
    path = workdir / "audit.keys"
    path.touch(mode=0o600)
    path.write_text(generate_key_line("demo") + "\n", encoding="utf-8")
    return path


def _command() -> str:
    """How to run this sidecar's command line: the entry point beside this Python, if any."""
    beside = Path(sys.executable).parent / "sidecar"
    return str(beside) if beside.exists() else f"{sys.executable} -m sidecar"


async def run_demo(base: Settings, out: TextIO = sys.stdout) -> None:
    """Run the demo until SIGINT/SIGTERM; everything it started is stopped on the way out."""
    async with AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sidecar-demo-")))
        redis, embedded = base.redis, ""
        if not await _redis_answers(redis):
            embedded_redis = stack.enter_context(EmbeddedRedis())
            redis, embedded = Redis(url=embedded_redis.url), " (embedded, stopped on exit)"
        archive_url, archive_note = _archive_url(stack, base)
        cert_file, key_file = write_self_signed(workdir)
        upstream_url = await stack.enter_async_context(echo_upstream())
        settings = base.model_copy(
            update={
                "listen": Listen(address="127.0.0.1", port=base.listen.port),
                "health": Health(address="127.0.0.1", port=base.health.port),
                "tls": Tls(cert_file=cert_file, key_file=key_file),
                "upstream": Upstream(url=upstream_url),
                "redis": redis,
                "routes": base.routes or DEMO_ROUTES,
                "shutdown": Shutdown(drain_s=0, grace_s=2),
                "audit": base.audit.model_copy(
                    update={
                        "spool_dir": workdir / "spool",
                        "encryption_key_file": _demo_key_file(workdir, base),
                    }
                ),
                "archive": base.archive.model_copy(update={"url": archive_url}),
                # SPEC §16: the demo shows the admin API too, on loopback.
                "admin": base.admin.model_copy(update={"enabled": True, "address": "127.0.0.1"}),
            }
        )
        server = await stack.enter_async_context(running(settings, check_certificate(settings.tls)))
        demo_key = await _issue_demo_key(settings)
        admin_key = await _issue_demo_key(settings, "demo-admin", ADMIN_SCOPES)
        dashboard = f"https://localhost:{server.admin_port}/"
        admin = f"{dashboard}admin/v1"
        proxy = f"https://localhost:{server.proxy_port}"
        health = f"http://127.0.0.1:{server.health_port}"
        archive = (
            f"{mask_url_credentials(archive_url)}{archive_note}" if archive_url else archive_note
        )
        reading = ""
        if archive_url is not None:
            config = _reading_config(workdir, settings)
            reading = f"""
Each request's audit record is archived in PostgreSQL within a second or two; read them back
(the archive and the newest window in Redis together) with:
  {_command()} audit query --since 1h --config {config}
  {_command()} archive status --config {config}
  {_command()} audit verify --config {config}      # tamper evidence: exit 0, no findings
"""
        print(
            f"""
sidecar demo is up.
  proxy     {proxy}   (TLS, self-signed certificate {cert_file})
  health    {health}/readyz   {health}/metrics
  upstream  {upstream_url}   (an echo server)
  redis     {redacted_url(redis.url)}{embedded}
  archive   {archive}
  dashboard {dashboard}   (sign in with the admin key below)
  admin     {admin}/openapi.json   (the admin API: TLS, same certificate)

A demo key (scope orders:read), shown this once:
  {demo_key}
An admin key (scopes {", ".join(ADMIN_SCOPES)}), shown this once:
  {admin_key}

Try:
  curl --cacert {cert_file} {proxy}/public/hello
  curl --cacert {cert_file} -H "Authorization: Bearer {demo_key}" {proxy}/v1/orders/42
  curl --cacert {cert_file} -i {proxy}/v1/orders/42          # 401: no key
  curl --cacert {cert_file} -i -X POST -H "Authorization: Bearer {demo_key}" \\
       {proxy}/v1/orders                                    # 403: needs orders:write
  curl -s {health}/readyz
  curl --cacert {cert_file} -H "Authorization: Bearer {admin_key}" {admin}/keys
  curl --cacert {cert_file} -H "Authorization: Bearer {admin_key}" "{admin}/events?since=1h"
  curl --cacert {cert_file} -H "Authorization: Bearer {admin_key}" "{admin}/activity?range=1h"
{reading}
Ctrl-C stops everything.
""",
            file=out,
            flush=True,
        )
        await _send_rejected(proxy, cert_file, demo_key)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.shutdown()
