"""SPEC §17: "Memory alone never holds a record whose request was answered."

Real `serve` processes take concurrent load during a Redis outage and are killed with SIGKILL
at random moments (a bounded number of times, the seed printed on failure); after Redis returns
and one more process has replayed the spool, every request that got a 2xx or 4xx answer has
exactly one record, and no request has two.
"""

from __future__ import annotations

import asyncio
import json
import random
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
    SidecarProcess,
    accepts_connections,
    free_port,
    serve_config,
    sidecar_process,
    wait_until,
)
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

AUDIT_STREAM = "sidecar:audit"
KILLS = 4
CLIENTS = 8
PATHS = ("/public/a", "/public/status/404", "/public/status/201")


async def request_ids_in_stream(redis: aioredis.Redis) -> Counter[str]:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return Counter(json.loads(fields[b"record"])["request_id"] for _id, fields in entries)


async def load(
    session: aiohttp.ClientSession,
    url: str,
    answered: dict[str, int],
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Send requests until `stop`; note each one that got a whole answer, and its status."""
    while not stop.is_set():
        request_id = f"kill-{uuid.uuid4().hex}"
        path = rng.choice(PATHS)
        try:
            async with session.get(
                url + path,
                headers={"X-Request-Id": request_id},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                await response.read()  # raises if the body was cut short
                answered[request_id] = response.status
        except (aiohttp.ClientError, TimeoutError):
            if stop.is_set():
                return
            await asyncio.sleep(0.01)  # the process is gone or restarting: not a busy loop


async def serving(sidecar: SidecarProcess, port: int) -> None:
    async def up() -> bool:
        if sidecar.process.returncode is not None:
            raise AssertionError(f"sidecar exited at start-up:\n{sidecar.log()}")
        return await accepts_connections(port)

    await wait_until(up, within=20, interval=0.05)


async def test_sigkill_at_random_moments_during_an_outage_loses_no_answered_record(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_outage: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    proxy_port, health_port = free_port(), free_port()
    config = serve_config(
        tmp_path / "sidecar.yaml",
        proxy_port=proxy_port,
        health_port=health_port,
        cert_files=cert_files,
        upstream_url=upstream.url,
        redis_url=redis_outage.url,
        rate_limits={"unauthenticated_per_ip": None},
        shutdown={"drain_s": 0, "grace_s": 2},
    )
    url = f"https://localhost:{proxy_port}"
    answered: dict[str, int] = {}
    redis_outage.stop()
    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        for kill in range(KILLS):
            async with sidecar_process(config, tmp_path / f"run-{kill}.log") as sidecar:
                await serving(sidecar, proxy_port)
                stop = asyncio.Event()
                before = len(answered)
                clients = [
                    asyncio.create_task(load(session, url, answered, stop, rng))
                    for _ in range(CLIENTS)
                ]

                async def some_answered(floor: int = before + 5) -> bool:
                    return len(answered) >= floor

                await wait_until(some_answered, within=20)
                # A random moment a little later: mid-batch, mid-fsync, mid-answer.
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                sidecar.process.send_signal(signal.SIGKILL)
                assert await sidecar.wait_exit(within=5) == -signal.SIGKILL
                stop.set()
                await asyncio.gather(*clients)
    statuses = Counter(answered.values())
    assert set(statuses) <= {200, 201, 404}, (seed, statuses)
    assert len(answered) >= KILLS * 5

    redis_outage.start()  # empty: only the spool can bring the records back
    fresh = aioredis.Redis.from_url(redis_outage.url)
    try:
        async with sidecar_process(config, tmp_path / "replay.log") as replay:

            async def replayed() -> bool:
                if replay.process.returncode is not None:
                    raise AssertionError(f"replaying sidecar exited:\n{replay.log()}")
                found = await request_ids_in_stream(fresh)
                return all(request_id in found for request_id in answered)

            try:
                await wait_until(replayed, within=30)
            except AssertionError:
                found = await request_ids_in_stream(fresh)
                missing = [rid for rid in answered if rid not in found]
                raise AssertionError(
                    f"seed {seed}: {len(missing)} of {len(answered)} answered requests have no "
                    f"record, e.g. {missing[:3]}\n{replay.log()}"
                ) from None
            counts = await request_ids_in_stream(fresh)
            doubled = [rid for rid, count in counts.items() if count > 1]
            assert not doubled, f"seed {seed}: recorded twice: {doubled[:3]}"
            replay.process.send_signal(signal.SIGTERM)
            assert await replay.wait_exit(within=10) == 0, replay.log()
    finally:
        await fresh.aclose()
