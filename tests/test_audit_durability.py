"""SPEC §17 "Nothing forwarded without a durable record", against a real Redis and a running
sidecar: an answer arrives only once its record is in Redis or fsync'd on disk, a Redis that
refuses the writer's appends makes `/readyz` fail (not only one that does not answer), and a
writer whose loop fails is restarted, counted and reported, with nothing it held lost.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.audit.spool import Spool, SpoolBudget
from sidecar.audit.writer import DurableStreamWriter, WriterHooks
from sidecar.storage.embedded import EmbeddedRedis
from tests.auditsupport import AUDIT_STREAM, records_for, send
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import metric_value


def command(client: aioredis.Redis, *args: Any) -> Any:
    """A raw command (redis-py leaves `execute_command` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


NO_LIMITS = {"unauthenticated_per_ip": None}  # its counter is a write: kept out of the way


def on_disk(spool_dir: Path, request_id: str) -> bool:
    """Whether a spool segment holds the request's record."""
    needle = request_id.encode()
    return any(needle in path.read_bytes() for path in spool_dir.rglob("*.spool"))


async def in_stream(redis: aioredis.Redis, request_id: str) -> bool:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return any(request_id in json.loads(fields[b"record"])["request_id"] for _id, fields in entries)


async def readiness(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    async with proxy.session.get(proxy.health_url + "/readyz") as response:
        return response.status, await response.json()


async def test_an_answer_arrives_only_once_its_record_is_kept(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """While Redis holds every write (CLIENT PAUSE WRITE), the record can only be kept by the
    spool: the moment the client has its whole answer, the record must be on disk already."""
    proxy: Proxy = await start_proxy(rate_limits=NO_LIMITS, redis={"timeout_s": 0.3})
    warm = await send(proxy, "GET", "/public/warm")
    assert warm.status == 200
    await records_for(redis_client, [warm.request_id])
    await command(redis_client, "CLIENT", "PAUSE", "3000", "WRITE")
    try:
        sent = await send(proxy, "GET", "/public/held")
        kept_at_answer = on_disk(tmp_path / "spool", sent.request_id)
    finally:
        await command(redis_client, "CLIENT", "UNPAUSE")
    assert sent.status == 200
    assert kept_at_answer, "the client had its answer while the record was in memory only"
    await records_for(redis_client, [sent.request_id], within=10)  # and replayed, once


@pytest.fixture
async def append_refused(redis_server: EmbeddedRedis) -> AsyncIterator[str]:
    """A Redis user allowed everything but XADD: the URL a sidecar connects with."""
    admin = aioredis.Redis.from_url(redis_server.url)
    user, password = f"noxadd-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await command(admin, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-xadd")
    try:
        host_port = redis_server.url.removeprefix("redis://")
        yield f"redis://{user}:{password}@{host_port}"
    finally:
        await command(admin, "ACL", "DELUSER", user)
        await admin.aclose()


async def test_a_redis_that_refuses_appends_fails_readiness_and_records_go_to_disk(
    start_proxy: ProxyFactory, append_refused: str, tmp_path: Path
) -> None:
    proxy: Proxy = await start_proxy(rate_limits=NO_LIMITS, redis={"url": append_refused})
    status, _ = await readiness(proxy)
    assert status == 200  # PING and the probe SET pass: nothing has been appended yet
    sent = await send(proxy, "GET", "/public/acl")
    assert sent.status == 200
    assert on_disk(tmp_path / "spool", sent.request_id), "answered, yet its record is nowhere"

    async def not_ready() -> bool:
        code, body = await readiness(proxy)
        return code == 503 and "refuses writes" in body["checks"]["audit"]

    await wait_until(not_ready, within=5)


async def test_a_redis_that_refuses_every_write_fails_the_redis_check(
    start_proxy: ProxyFactory, redis_server: EmbeddedRedis
) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    user, password = f"readonly-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await command(
        admin, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-@write"
    )
    try:
        url = f"redis://{user}:{password}@{redis_server.url.removeprefix('redis://')}"
        proxy: Proxy = await start_proxy(rate_limits=NO_LIMITS, redis={"url": url})
        status, body = await readiness(proxy)
        assert status == 503
        assert "refuses the sidecar's writes" in body["checks"]["redis"]
    finally:
        await command(admin, "ACL", "DELUSER", user)
        await admin.aclose()


class BreakingSpool(Spool):
    """A real spool whose `oldest` fails a given number of times, as a bug or an unforeseen
    disk state would: what the supervisor exists for."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    def oldest(self) -> Path | None:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("an unforeseen failure")
        return super().oldest()


async def test_a_failing_writer_is_restarted_counted_and_reported_and_loses_nothing(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    restarts: list[int] = []
    stream = f"test:supervised:{uuid.uuid4().hex}"
    spool = BreakingSpool(tmp_path, "audit", SpoolBudget(1 << 20), stream=stream, failures=2)
    writer = DurableStreamWriter(
        redis_client,
        stream,
        "record",
        spool,
        writer_id=spool.owner,
        hooks=WriterHooks(restarted=lambda: restarts.append(1)),
    )
    seqs = [writer.submit(json.dumps({"n": n}).encode()) for n in range(3)]
    task = asyncio.create_task(writer.run())
    try:

        async def restarted_twice() -> bool:
            assert not task.done(), "the supervised writer ended"
            return len(restarts) >= 2

        await wait_until(restarted_twice, within=10)
        for seq in seqs:
            assert seq is not None
            await writer.durable(seq, 10)
        entries: Any = await redis_client.xrange(stream)
        assert [json.loads(fields[b"record"])["n"] for _id, fields in entries] == [0, 1, 2]
        assert writer.problem() is None  # running again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        spool.close()
        await redis_client.delete(stream)


async def test_readiness_names_a_writer_that_is_not_running(
    start_proxy: ProxyFactory,
) -> None:
    proxy: Proxy = await start_proxy(rate_limits=NO_LIMITS)
    writer = proxy.server.sidecar.pipeline._audit._writer
    writer.running = False  # what the supervisor sets between a failure and the restart
    try:
        status, body = await readiness(proxy)
        assert status == 503
        assert "writer not running" in body["checks"]["audit"]
    finally:
        writer.running = True
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        text = await response.text()
    restarts = metric_value(text, "sidecar_audit_writer_restarts_total", {"stream": AUDIT_STREAM})
    assert restarts == 0
