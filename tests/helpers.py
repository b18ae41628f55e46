"""Shared test helpers: deadlines instead of sleeps, raw TLS exchanges, sidecar subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from sidecar.storage.embedded import free_port

__all__ = [
    "RawResponse",
    "SidecarProcess",
    "accepts_connections",
    "free_port",
    "is_listening",
    "raw_tls_exchange",
    "readyz_status",
    "run_cli",
    "sidecar_env",
    "sidecar_process",
    "wait_ready",
    "wait_until",
    "write_config",
]

SECURITY_HEADERS = ("Strict-Transport-Security", "X-Request-Id", "X-Content-Type-Options")
PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id"}


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.02
) -> None:
    """Poll `condition` until it is true; fail the test when `within` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)  # a poll interval, not synchronisation: the check decides


@dataclass(frozen=True)
class RawResponse:
    """An HTTP/1.1 response read off a raw socket, byte for byte."""

    raw: bytes
    closed: bool  # the server closed the connection (EOF or reset) before the deadline

    @property
    def status(self) -> int:
        line = self.raw.split(b"\r\n", 1)[0]
        assert line.startswith(b"HTTP/1."), f"not an HTTP response: {self.raw[:80]!r}"
        return int(line.split()[1])

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        result: dict[str, str] = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            result[name.strip().lower()] = value.strip()
        return result

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.raw else b""


async def raw_exchange(
    port: int,
    payload: bytes,
    *,
    ssl_context: ssl.SSLContext | None,
    within: float = 3.0,
) -> RawResponse:
    """Send `payload` as is and read until the server closes or `within` seconds pass.

    For requests a well-behaved client library refuses to send (smuggling attempts,
    absolute-form targets, unnormalised paths, plain HTTP to the TLS port).
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ssl_context,
            server_hostname="localhost" if ssl_context is not None else None,
        ),
        within,
    )
    received = bytearray()
    closed = False
    deadline = time.monotonic() + within
    try:
        writer.write(payload)
        await writer.drain()
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                break
            except (ConnectionError, ssl.SSLError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)
    return RawResponse(bytes(received), closed)


async def raw_tls_exchange(
    port: int, payload: bytes, ssl_context: ssl.SSLContext, *, within: float = 3.0
) -> RawResponse:
    return await raw_exchange(port, payload, ssl_context=ssl_context, within=within)


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on the port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def sidecar_env(**extra: str) -> dict[str, str]:
    """The environment for a sidecar subprocess: ours minus any SIDECAR_… settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
    env.update(extra)
    return env


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False), encoding="utf-8")
    return path


def serve_config(
    path: Path,
    *,
    proxy_port: int,
    health_port: int,
    cert_files: tuple[Path, Path],
    upstream_url: str,
    redis_url: str,
    **sections: Any,
) -> Path:
    """A config for a `serve` subprocess on loopback, public routes under /public/**; keyword
    sections are merged into (dicts) or replace (anything else) the defaults."""
    document: dict[str, Any] = {
        "listen": {"address": "127.0.0.1", "port": proxy_port},
        "health": {"address": "127.0.0.1", "port": health_port},
        "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
        "upstream": {"url": upstream_url},
        "redis": {"url": redis_url},
        "audit": {"spool_dir": str(path.parent / "spool")},
        "routes": [{"path": "/public/**", "public": True}],
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(document.get(name), dict):
            document[name] = {**document[name], **value}
        else:
            document[name] = value
    return write_config(path, document)


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m sidecar ARGS` to completion (bounded by `timeout`)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else sidecar_env(),
        check=False,
    )


async def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connect to the port succeeds now (without blocking the event loop)."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class SidecarProcess:
    """`python -m sidecar serve` as a child of the test's event loop, output kept in a file."""

    process: asyncio.subprocess.Process
    output: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    async def wait_exit(self, within: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"sidecar did not exit within {within}s:\n{self.log()}") from None


@contextlib.asynccontextmanager
async def sidecar_process(
    config: Path, output: Path, **extra_env: str
) -> AsyncIterator[SidecarProcess]:
    """Start `serve --config CONFIG` (with `extra_env` added to its environment); on the way
    out, kill it if the test left it running."""
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            env=sidecar_env(**extra_env),
        )
    try:
        yield SidecarProcess(process, output)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


START_DEADLINE_S = 15.0


async def readyz_status(session: aiohttp.ClientSession, health_port: int) -> int | None:
    """The status of the health port's `/readyz`, or None while nothing answers there."""
    try:
        async with session.get(
            f"http://127.0.0.1:{health_port}/readyz", timeout=aiohttp.ClientTimeout(total=1)
        ) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def get_status(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> int | None:
    """GET `url` and read the whole answer: its status, or None when it did not come (the
    process is down, restarting, or cut the connection)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2), **kwargs) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_ready(sidecar: SidecarProcess, session: aiohttp.ClientSession, port: int) -> None:
    """Poll `/readyz` until 200; fail at once if the process exited, or at the deadline."""

    async def ready() -> bool:
        if sidecar.process.returncode is not None:
            raise AssertionError(f"sidecar exited at start-up:\n{sidecar.log()}")
        return await readyz_status(session, port) == 200

    await wait_until(ready, within=START_DEADLINE_S, interval=0.05)
