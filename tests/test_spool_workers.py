"""SPEC §17, end to end: "changing `--workers` strands nothing". Two real `sidecar serve`
processes share one `audit.spool_dir` and spool while Redis is down; both are killed with
SIGKILL; one spooled entry is then damaged on disk. A `serve --workers 2` started with Redis
back adopts both directories (its two workers race for them): every other request id appears
exactly once in the stream, the damaged one is quarantined and counted, and nothing is left."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
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
    free_port,
    get_status,
    serve_config,
    sidecar_env,
    sidecar_process,
    wait_ready,
    wait_until,
)
from tests.keysupport import FAST_KEYS, metric_value, sidecar_cli
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

AUDIT_STREAM = "sidecar:audit"
PER_PROCESS = 15


async def metrics(session: aiohttp.ClientSession, health_port: int) -> str:
    async with session.get(f"http://127.0.0.1:{health_port}/metrics") as response:
        return await response.text()


async def request_ids(redis: aioredis.Redis) -> Counter[str]:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return Counter(json.loads(fields[b"record"])["request_id"] for _id, fields in entries)


def segments(spool_dir: Path) -> list[Path]:
    return sorted((spool_dir / "audit").glob("*/*.spool"))


def damage_entry_of(spool_dir: Path, request_id: str) -> Path:
    """Flip one character of the entry holding `request_id` (the CRC no longer matches)."""
    for segment in segments(spool_dir):
        data = segment.read_bytes()
        if request_id.encode() in data:
            segment.write_bytes(data.replace(request_id.encode(), request_id[:-1].encode() + b"~"))
            return segment
    raise AssertionError(f"{request_id} is in no spool segment")


async def test_spools_of_killed_processes_are_adopted_by_a_different_worker_count(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_client: aioredis.Redis,
    redis_outage: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    spool_dir = tmp_path / "spool"
    ports = [(free_port(), free_port()) for _ in range(2)]
    configs = [
        serve_config(
            tmp_path / f"sidecar{index}.yaml",
            proxy_port=proxy_port,
            health_port=health_port,
            cert_files=cert_files,
            upstream_url=upstream.url,
            redis_url=redis_outage.url,
            keys={**FAST_KEYS, "stale_if_error_s": 300},
            routes=[{"path": "/v1/orders/**", "scopes": ["orders:read"]}],
            audit={"spool_dir": str(spool_dir)},
            shutdown={"drain_s": 0, "grace_s": 2},
        )
        for index, (proxy_port, health_port) in enumerate(ports)
    ]
    made = await sidecar_cli(
        "keys", "create", "--name", "spool", "--scope", "orders:read", "--json",
        "--config", str(configs[0]),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
    ids = [[f"p{index}-{n}-{uuid.uuid4().hex}" for n in range(PER_PROCESS)] for index in (0, 1)]

    connector = aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with (
            sidecar_process(configs[0], tmp_path / "first.log") as first,
            sidecar_process(configs[1], tmp_path / "second.log") as second,
        ):
            running = [first, second]
            for sidecar, (proxy_port, health_port) in zip(running, ports, strict=True):
                await wait_ready(sidecar, session, health_port)
                warm = {**headers, "X-Request-Id": f"warm-{uuid.uuid4().hex}"}
                url = f"https://localhost:{proxy_port}/v1/orders/0"
                assert (
                    await get_status(session, url, headers=warm) == 200
                )  # key cached for the outage

            async def warm_written() -> bool:
                found = await request_ids(redis_client)
                return sum(1 for name in found if name.startswith("warm-")) >= 2

            await wait_until(warm_written, within=10)

            redis_outage.stop()
            for index, (proxy_port, health_port) in enumerate(ports):
                for request_id in ids[index]:
                    sent = {**headers, "X-Request-Id": request_id}
                    url = f"https://localhost:{proxy_port}/v1/orders/1"
                    assert await get_status(session, url, headers=sent) == 200

                async def on_disk(port: int = health_port) -> bool:
                    text = await metrics(session, port)
                    labels = {"outcome": "spooled"}
                    return metric_value(text, "sidecar_audit_records_total", labels) >= PER_PROCESS

                await wait_until(on_disk, within=10)
            for sidecar in running:
                sidecar.process.send_signal(signal.SIGKILL)
                assert await sidecar.wait_exit(within=5) == -signal.SIGKILL

        owners = {segment.parent for segment in segments(spool_dir)}
        assert len(owners) == 2, "each process spooled into a directory of its own"
        damaged_id = ids[1][3]
        damaged = damage_entry_of(spool_dir, damaged_id)
        expected = Counter(request_id for group in ids for request_id in group)
        del expected[damaged_id]

        redis_outage.start()  # empty: it keeps no data across restarts
        fresh = aioredis.Redis.from_url(redis_outage.url)
        with (tmp_path / "workers.log").open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sidecar", "serve", "--workers", "2",
                "--config", str(configs[0]),
                stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=asyncio.subprocess.STDOUT, env=sidecar_env(),
            )  # fmt: skip
        workers = SidecarProcess(process, tmp_path / "workers.log")
        try:
            await wait_ready(workers, session, ports[0][1])

            async def replayed() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"the sidecar exited:\n{workers.log()}")
                found = await request_ids(fresh)
                return all(request_id in found for request_id in expected)

            await wait_until(replayed, within=20)

            async def adopted_dirs_removed() -> bool:
                return not segments(spool_dir) and not any(owner.exists() for owner in owners)

            await wait_until(adopted_dirs_removed, within=10)
            assert await request_ids(fresh) == expected  # each exactly once, the damaged one not
            text = await metrics(session, ports[0][1])
            assert (
                metric_value(text, "sidecar_audit_quarantined_total", {"stream": AUDIT_STREAM}) == 1
            ), text
            quarantine = spool_dir / "quarantine"
            (kept,) = quarantine.glob(f"audit-{damaged.parent.name}-{damaged.name}.quarantine")
            assert damaged_id[:-1].encode() + b"~" in kept.read_bytes()
            # The whole output: `log()` is its tail, which more start-up lines push this out of.
            assert "spool entry quarantined" in workers.output.read_text(errors="replace")

            # Both workers up before the stop: one stopped mid-start-up exits non-zero.
            async def both_listening() -> bool:
                return workers.output.read_text().count('"event": "listening"') == 2

            await wait_until(both_listening, within=20)
            process.send_signal(signal.SIGTERM)
            assert await workers.wait_exit(within=20) == 0, workers.log()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await fresh.aclose()
        # Clean exits leave nothing to adopt: each worker removed its own empty directory.
        assert not [path for path in (spool_dir / "audit").iterdir() if path.is_dir()]
