"""`serve --workers N` (SPEC §10, §11): N processes share the ports, /metrics covers all of
them, a dead worker is replaced, and SIGTERM stops them all with exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import (
    SidecarProcess,
    free_port,
    serve_config,
    sidecar_env,
    wait_ready,
    wait_until,
)
from tests.upstream import UpstreamServer


def _children(parent: int) -> set[int]:
    """Live child processes of `parent`, read from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: fields start after its closing parenthesis.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that carry all of `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{key}="{val}"' in series for key, val in labels.items()):
            total += float(value)
    return total


@pytest.mark.slow
async def test_two_workers_share_the_port_metrics_and_shutdown(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    proxy_port, health_port = free_port(), free_port()
    config = serve_config(
        tmp_path / "sidecar.yaml",
        proxy_port=proxy_port,
        health_port=health_port,
        cert_files=cert_files,
        upstream_url=upstream.url,
        redis_url=redis_server.url,
        shutdown={"drain_s": 0, "grace_s": 3},
        log={"level": "warning"},
    )
    with (tmp_path / "sidecar.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "sidecar", "serve", "--workers", "2", "--config", str(config)),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            env=sidecar_env(),
        )
    sidecar = SidecarProcess(process, tmp_path / "sidecar.log")
    try:
        async with aiohttp.ClientSession() as health:
            await wait_ready(sidecar, health, health_port)

            async def two_workers() -> bool:
                return len(_children(process.pid)) >= 2

            await wait_until(two_workers, within=15)
            workers = _children(process.pid)

            # New connection per request: the kernel spreads them over both workers.
            connector = aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
            async with aiohttp.ClientSession(connector=connector) as client:
                for index in range(40):
                    url = f"https://localhost:{proxy_port}/public/n{index}"
                    async with client.get(url) as response:
                        assert response.status == 200

            async def counted() -> bool:
                async with health.get(f"http://127.0.0.1:{health_port}/metrics") as response:
                    text = await response.text()
                return (
                    _metric(text, "sidecar_requests_total", route="/public/**", status="200") == 40
                )

            await wait_until(counted, within=10)
            assert len(upstream.seen) == 40

            # A worker that dies is replaced.
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)

            async def replaced() -> bool:
                now = _children(process.pid)
                return victim not in now and len(now) >= 2

            await wait_until(replaced, within=20)
            await wait_ready(sidecar, health, health_port)

        process.send_signal(signal.SIGTERM)
        assert await sidecar.wait_exit(20) == 0, sidecar.log()
        assert _children(process.pid) == set()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
