"""SPEC §7: "A record is lost only if the disk is lost." A real `python -m sidecar serve` process
spools records while Redis is down and is then killed with SIGKILL (no flush, no goodbye); the
next process on the same spool directory replays every record, each exactly once.
"""

from __future__ import annotations

import json
import signal
import ssl
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import (
    free_port,
    get_status,
    sidecar_process,
    wait_ready,
    wait_until,
    write_config,
)
from tests.keysupport import FAST_KEYS, metric_value, sidecar_cli
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

AUDIT_STREAM = "sidecar:audit"
REQUESTS = 30
REPLAY_DEADLINE_S = 20.0


async def spooled(session: aiohttp.ClientSession, health_url: str) -> float:
    async with session.get(health_url + "/metrics") as response:
        text = await response.text()
    return metric_value(text, "sidecar_audit_records_total", {"outcome": "spooled"})


async def request_ids_in_stream(redis: aioredis.Redis) -> Counter[str]:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return Counter(json.loads(fields[b"record"])["request_id"] for _id, fields in entries)


async def test_records_spooled_before_a_sigkill_are_replayed_once_by_the_next_process(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_client: aioredis.Redis,
    redis_outage: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    proxy_port, health_port = free_port(), free_port()
    spool_dir = tmp_path / "spool"
    config = write_config(
        tmp_path / "sidecar.yaml",
        {
            "listen": {"address": "127.0.0.1", "port": proxy_port},
            "health": {"address": "127.0.0.1", "port": health_port},
            "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            "upstream": {"url": upstream.url, "timeout_s": 5},
            "redis": {"url": redis_outage.url},
            "keys": {**FAST_KEYS, "stale_if_error_s": 300},
            "routes": [{"path": "/v1/orders/**", "scopes": ["orders:read"]}],
            "audit": {"spool_dir": str(spool_dir)},
            "shutdown": {"drain_s": 0, "grace_s": 2},
        },
    )
    proxy_url = f"https://localhost:{proxy_port}"
    health_url = f"http://127.0.0.1:{health_port}"
    made = await sidecar_cli(
        "keys", "create", "--name", "crash", "--scope", "orders:read", "--json",
        "--config", str(config),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session:
        async with sidecar_process(config, tmp_path / "first.log") as first:
            await wait_ready(first, session, health_port)
            warm_id = f"warm-{uuid.uuid4().hex}"
            warm_headers = {**headers, "X-Request-Id": warm_id}
            assert (
                await get_status(session, proxy_url + "/v1/orders/0", headers=warm_headers) == 200
            )

            async def warm_written() -> bool:
                return warm_id in await request_ids_in_stream(redis_client)

            await wait_until(warm_written, within=5)  # so the replay below cannot include it

            redis_outage.stop()
            ids = [f"crash-{n}-{uuid.uuid4().hex}" for n in range(REQUESTS)]
            for request_id in ids:
                sent = {**headers, "X-Request-Id": request_id}
                assert await get_status(session, proxy_url + "/v1/orders/1", headers=sent) == 200

            async def all_on_disk() -> bool:
                return await spooled(session, health_url) >= REQUESTS

            await wait_until(all_on_disk, within=10)
            first.process.send_signal(signal.SIGKILL)
            assert await first.wait_exit(within=5) == -signal.SIGKILL
        assert list((spool_dir / "audit").glob("*/*.spool")), "nothing left on disk to replay"

        redis_outage.start()  # empty: it keeps no data across restarts
        fresh = aioredis.Redis.from_url(redis_outage.url)
        try:
            async with sidecar_process(config, tmp_path / "second.log") as second:

                async def replayed() -> bool:
                    if second.process.returncode is not None:
                        raise AssertionError(f"second sidecar exited:\n{second.log()}")
                    found = await request_ids_in_stream(fresh)
                    return all(request_id in found for request_id in ids)

                await wait_until(replayed, within=REPLAY_DEADLINE_S)
                assert await request_ids_in_stream(fresh) == Counter(ids)  # each exactly once

                async def spool_emptied() -> bool:
                    return not list((spool_dir / "audit").glob("*/*.spool"))

                await wait_until(spool_emptied, within=5)
                second.process.send_signal(signal.SIGTERM)
                assert await second.wait_exit(within=10) == 0, second.log()
            assert await request_ids_in_stream(fresh) == Counter(ids)
        finally:
            await fresh.aclose()
