"""SPEC §15 with real `serve` processes: two replicas archive the same streams, and each record
lands in PostgreSQL exactly once; one of them is killed with SIGKILL in the middle of a batch
(its entries read, its INSERT in flight, nothing acknowledged) and the other claims what it
left, still exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis

from sidecar.archive.window import GROUP
from sidecar.storage.embedded import EmbeddedRedis
from tests.archivesupport import archived_request_ids, document, send_until
from tests.auditsupport import AUDIT_STREAM
from tests.helpers import free_port, serve_config, sidecar_process, wait_ready, wait_until
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

BATCH = 20  # small: both replicas hold batches while the load runs


async def load(
    session: aiohttp.ClientSession, urls: list[str], answered: set[str], count: int, tag: str
) -> None:
    """Requests through every replica (two clients each) until `count` more are answered."""
    stop = asyncio.Event()
    floor = len(answered) + count
    clients = [
        asyncio.create_task(send_until(session, url + "/public/r", answered, stop, tag))
        for url in urls
        for _ in range(2)
    ]

    async def enough() -> bool:
        return len(answered) >= floor

    try:
        await wait_until(enough, within=20)
    finally:
        stop.set()
        await asyncio.gather(*clients)


async def consumer_of(directory: Path) -> str:
    """A replica's consumer name: its audit writer id, the name of its spool directory."""
    (owner,) = [path.name for path in (directory / "spool" / "audit").iterdir()]
    return owner


async def test_two_replicas_archive_each_record_once_even_when_one_dies_mid_batch(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
    archive_url: str,
) -> None:
    replicas: list[tuple[Path, int, int]] = []
    for index in (1, 2):
        directory = tmp_path / f"replica{index}"
        directory.mkdir()
        replicas.append((directory, free_port(), free_port()))
    answered: set[str] = set()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session,
        sidecar_process(config(replicas[0], cert_files, redis_server, upstream, archive_url),
                        replicas[0][0] / "out.log") as first,
        sidecar_process(config(replicas[1], cert_files, redis_server, upstream, archive_url),
                        replicas[1][0] / "out.log") as second,
    ):  # fmt: skip
        for process, (_, _, health_port) in zip((first, second), replicas, strict=True):
            await wait_ready(process, session, health_port)
        urls = [f"https://localhost:{proxy_port}" for _, proxy_port, _ in replicas]
        names = [await consumer_of(directory) for directory, _, _ in replicas]
        processes = dict(zip(names, (first, second), strict=True))

        # Both archiving the same streams: every answered request once.
        await load(session, urls, answered, 150, "both")
        await wait_until(lambda: all_archived(archive_url, answered), within=15)
        # Mid-batch: the table locked, a burst of entries appended at once, so each replica
        # reads a whole batch and its INSERT waits, nothing acknowledged; one is killed there.
        async with await psycopg.AsyncConnection.connect(archive_url) as lock:
            await lock.execute("LOCK TABLE audit_records IN EXCLUSIVE MODE")
            answered |= await burst(redis_client, BATCH * 2)
            victim, held = await wait_for_a_blocked_batch(redis_client, archive_url, names)
            processes[victim].process.send_signal(signal.SIGKILL)
            assert await processes[victim].wait_exit(within=5) == -signal.SIGKILL
            assert held == BATCH  # what it took: a whole batch, in flight
            await lock.rollback()  # the survivor's INSERT goes on; it claims the victim's batch

        await wait_until(lambda: all_archived(archive_url, answered), within=20)
        archived = await archived_request_ids(archive_url)
        assert set(archived.values()) == {1}, "a record archived twice"

        async def nothing_pending() -> bool:
            pending: Any = await redis_client.xpending(AUDIT_STREAM, GROUP)
            return int(pending["pending"]) == 0

        await wait_until(nothing_pending, within=10)
        survivor = next(process for name, process in processes.items() if name != victim)
        survivor.process.send_signal(signal.SIGTERM)
        assert await survivor.wait_exit(within=10) == 0, survivor.log()


def config(
    replica: tuple[Path, int, int],
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    archive_url: str,
) -> Path:
    directory, proxy_port, health_port = replica
    return serve_config(
        directory / "sidecar.yaml",
        proxy_port=proxy_port,
        health_port=health_port,
        cert_files=cert_files,
        upstream_url=upstream.url,
        redis_url=redis_server.url,
        # Small batches, so both replicas hold some; a dead one's claimed after a second.
        archive={"url": archive_url, "batch": BATCH, "claim_idle_s": 1},
        rate_limits={"unauthenticated_per_ip": None},
        shutdown={"drain_s": 0, "grace_s": 2},
    )


async def all_archived(url: str, answered: set[str]) -> bool:
    return set(await archived_request_ids(url)) >= answered


async def burst(redis: aioredis.Redis, count: int) -> set[str]:
    """`count` records appended in one transaction, as a writer's batch is: readers blocked on
    the stream wake to a whole batch each. Their request ids."""
    request_ids = {f"burst-{n}" for n in range(count)}
    async with redis.pipeline(transaction=True) as pipe:
        for request_id in sorted(request_ids):
            fields = {"record": json.dumps(document(request_id, datetime.now(UTC)))}
            pipe.xadd(AUDIT_STREAM, fields)  # type: ignore[arg-type]
        await pipe.execute()
    return request_ids


async def wait_for_a_blocked_batch(
    redis: aioredis.Redis, url: str, consumers: list[str]
) -> tuple[str, int]:
    """Once every replica's INSERT waits on the lock: the consumer holding the most pending
    entries (it is mid-batch), and how many it holds."""
    found: list[tuple[str, int]] = []

    async def blocked() -> bool:
        summary: Any = await redis.xpending(AUDIT_STREAM, GROUP)
        holding = {entry["name"].decode(): int(entry["pending"]) for entry in summary["consumers"]}
        if await _waiting_inserts(url) < len(consumers) or not holding:
            return False
        name = max(consumers, key=lambda consumer: holding.get(consumer, 0))
        found.append((name, holding.get(name, 0)))
        return True

    await wait_until(blocked, within=10)
    return found[-1]


async def _waiting_inserts(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sidecar-archiver' "
            "AND wait_event_type = 'Lock' AND datname = current_database()"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
