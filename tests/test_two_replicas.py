"""SPEC §4: revocation fails a key everywhere within one second, on every replica.

Two real `python -m sidecar serve` processes share the tests' Redis; each has verified and
cached the key; `sidecar keys revoke` (a third process) must reach both caches through pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
import pytest
import redis.asyncio as aioredis

from sidecar.storage.embedded import EmbeddedRedis
from tests.authsupport import REQUEST_TIMEOUT, ROUTES
from tests.helpers import free_port, sidecar_env, write_config
from tests.keysupport import (
    FAST_KEYS,
    metric_value,
    sidecar_cli,
    wait_for_invalidation_listeners,
)
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0


@dataclass
class Replica:
    config: Path
    proxy_port: int
    health_port: int
    process: asyncio.subprocess.Process
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.proxy_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


async def start_replica(
    index: int,
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_url: str,
    upstream_url: str,
    stderr: IO[bytes],
) -> Replica:
    proxy_port, health_port = free_port(), free_port()
    config = write_config(
        tmp_path / f"replica{index}.yaml",
        {
            "listen": {"address": "127.0.0.1", "port": proxy_port},
            "health": {"address": "127.0.0.1", "port": health_port},
            "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            "upstream": {"url": upstream_url, "timeout_s": 5},
            "redis": {"url": redis_url},
            "keys": FAST_KEYS,
            "routes": ROUTES,
            "audit": {"spool_dir": str(tmp_path / f"spool{index}")},
            "shutdown": {"drain_s": 0, "grace_s": 2},
            "log": {"level": "debug", "format": "json"},
        },
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stderr,
        stderr=stderr,
        env=sidecar_env(),
    )
    return Replica(config, proxy_port, health_port, process, Path(stderr.name))


def log_file(path: Path) -> IO[bytes]:
    """Where a replica's output goes: a file, so a chatty process never blocks on a pipe."""
    return path.open("wb")


async def wait_ready(replica: Replica, session: aiohttp.ClientSession) -> None:
    """Poll /readyz until 200; fail at once if the process died, or at the deadline."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if replica.process.returncode is not None:
            pytest.fail(f"replica exited ({replica.process.returncode}): {replica.log()[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(replica.health_url + "/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)  # a poll interval: /readyz decides
    pytest.fail(f"replica not ready within {START_DEADLINE_S}s: {replica.log()[-2000:]}")


async def stop(replica: Replica) -> int:
    """SIGTERM (a graceful stop) and wait; SIGKILL only if it does not finish in time."""
    process = replica.process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_DEADLINE_S)
        except TimeoutError:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode


@pytest.fixture
async def replicas(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> AsyncIterator[tuple[list[Replica], aiohttp.ClientSession]]:
    started: list[Replica] = []
    with contextlib.ExitStack() as files:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl), timeout=REQUEST_TIMEOUT
        ) as session:
            try:
                for index in (1, 2):
                    log = files.enter_context(log_file(tmp_path / f"replica{index}.log"))
                    started.append(
                        await start_replica(
                            index, tmp_path, cert_files, redis_server.url, upstream.url, log
                        )
                    )
                await asyncio.gather(*(wait_ready(replica, session) for replica in started))
                # Each replica clears its cache when its invalidation feed subscribes: wait for
                # both feeds, so that clear cannot be mistaken for a revocation arriving.
                await wait_for_invalidation_listeners(redis_client, count=2)
                yield started, session
            finally:
                codes = await asyncio.gather(*(stop(replica) for replica in started))
                assert codes == [0] * len(started), [r.log()[-2000:] for r in started]


async def status(session: aiohttp.ClientSession, replica: Replica, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.get(replica.url + "/v1/orders/1", headers=headers) as response:
        await response.read()
        return response.status


async def metrics(session: aiohttp.ClientSession, replica: Replica) -> str:
    async with session.get(replica.health_url + "/metrics") as response:
        return await response.text()


async def test_revocation_reaches_both_replicas_within_one_second(
    replicas: tuple[list[Replica], aiohttp.ClientSession], tmp_path: Path
) -> None:
    servers, session = replicas
    made = await sidecar_cli(
        "keys", "create", "--name", "shared", "--scope", "orders:read", "--json",
        "--config", str(servers[0].config),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]

    for replica in servers:
        assert await status(session, replica, key) == 200
        assert await status(session, replica, key) == 200
    for replica in servers:  # verified once, then served from each replica's own cache
        text = await metrics(session, replica)
        assert metric_value(text, "sidecar_argon2_verifications_total") == 1
        assert metric_value(text, "sidecar_key_cache_total", {"result": "hit"}) >= 1

    revoked = await sidecar_cli("keys", "revoke", "shared", "--config", str(servers[1].config))
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 1.0
    pending = list(servers)
    while pending:
        answers = await asyncio.gather(*(status(session, replica, key) for replica in pending))
        assert set(answers) <= {200, 401}, answers
        pending = [r for r, code in zip(pending, answers, strict=True) if code != 401]
        if pending and time.monotonic() >= deadline:
            pytest.fail(f"{len(pending)} replica(s) still accept the revoked key after 1 s")
        await asyncio.sleep(0.02)  # a poll interval: the answers decide

    # Neither replica wrote the key or its secret to its log.
    for replica in servers:
        log = replica.log()
        assert '"request"' in log  # the logs are there to search
        assert key not in log
        assert key.split("_")[3][:16] not in log
