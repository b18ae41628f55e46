"""SPEC §11: a sidecar whose Redis is not there yet still starts and serves; `/readyz` says
"redis" until Redis answers, then turns 200 by itself — no restart — and keys created from
then on authenticate. A real `python -m sidecar serve` process, a real late `redis-server`."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from sidecar.keys.format import generate_key
from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import (
    SidecarProcess,
    free_port,
    is_listening,
    sidecar_process,
    wait_until,
    write_config,
)
from tests.keysupport import FAST_KEYS, sidecar_cli
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

START_DEADLINE_S = 20.0
TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def late_redis() -> AsyncIterator[EmbeddedRedis]:
    """A Redis on a port where nothing listens yet: the test starts it when it wants."""
    server = EmbeddedRedis(port=free_port())
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


async def answer(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int | None, bytes]:
    """(status, body); status None when nothing answered."""
    try:
        async with session.get(url, timeout=TIMEOUT, **kwargs) as response:
            return response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return None, b""


async def test_a_sidecar_started_before_its_redis_serves_and_becomes_ready_by_itself(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
    late_redis: EmbeddedRedis,
) -> None:
    assert not is_listening(late_redis.port)
    proxy_port, health_port = free_port(), free_port()
    config = write_config(
        tmp_path / "sidecar.yaml",
        {
            "listen": {"address": "127.0.0.1", "port": proxy_port},
            "health": {"address": "127.0.0.1", "port": health_port},
            "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            "upstream": {"url": upstream.url, "timeout_s": 5},
            "redis": {"url": late_redis.url, "timeout_s": 0.25},
            "keys": FAST_KEYS,
            "routes": [
                {"path": "/public/**", "public": True},
                {"path": "/v1/orders/**", "scopes": ["orders:read"]},
            ],
            "audit": {"spool_dir": str(tmp_path / "spool")},
            "shutdown": {"drain_s": 0, "grace_s": 2},
        },
    )
    proxy_url = f"https://localhost:{proxy_port}"
    health_url = f"http://127.0.0.1:{health_port}"

    connector = aiohttp.TCPConnector(ssl=client_ssl)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        sidecar_process(config, tmp_path / "serve.log") as sidecar,
    ):

        async def alive() -> bool:
            assert_running(sidecar)
            return (await answer(session, health_url + "/healthz"))[0] == 200

        await wait_until(alive, within=START_DEADLINE_S, interval=0.05)

        # Serving, not ready: readiness names Redis.
        status, body = await answer(session, health_url + "/readyz")
        assert status == 503, body
        report = json.loads(body)
        assert "redis" in report["failing"], report
        assert report["checks"]["redis"] != "ok"
        # The proxy port serves what needs no key store; the record waits on disk.
        early_id = f"early-{uuid.uuid4().hex}"
        public = await answer(
            session, proxy_url + "/public/early", headers={"X-Request-Id": early_id}
        )
        assert public[0] == 200
        # A key cannot be checked: 503 (come back later), not 401 (go away) and never 200.
        unknown, _ = generate_key("sk", "live")
        async with session.get(
            proxy_url + "/v1/orders/1", headers={"Authorization": f"Bearer {unknown}"}
        ) as refused:
            assert refused.status == 503
            assert int(refused.headers["Retry-After"]) >= 1

        await asyncio.to_thread(late_redis.start)

        async def ready() -> bool:
            assert_running(sidecar)
            return (await answer(session, health_url + "/readyz"))[0] == 200

        await wait_until(ready, within=10)

        made = await sidecar_cli(
            "keys", "create", "--name", "late", "--scope", "orders:read", "--json",
            "--config", str(config),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)["key"]
        status, body = await answer(
            session, proxy_url + "/v1/orders/1", headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 200, body

        # And the record made before Redis existed reached the stream.
        client = aioredis.Redis.from_url(late_redis.url)
        try:

            async def early_record_replayed() -> bool:
                entries: Any = await client.xrange("sidecar:audit")
                ids = [json.loads(fields[b"record"])["request_id"] for _id, fields in entries]
                return early_id in ids

            await wait_until(early_record_replayed, within=10)
        finally:
            await client.aclose()


def assert_running(sidecar: SidecarProcess) -> None:
    if sidecar.process.returncode is not None:
        raise AssertionError(f"the sidecar exited:\n{sidecar.log()}")
