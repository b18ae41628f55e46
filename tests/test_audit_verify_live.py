"""SPEC §17 tamper evidence end to end: records and events written by a running sidecar (with an
encryption key file, so an HMAC key derived from it) verify clean, also after an outage's spool
replay; an XDEL'd record, an edited one and a ciphertext swapped between two records do not.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.archive.tables import AUDIT_RECORDS, AUTH_EVENTS, ArchivedStream
from sidecar.audit.crypto import generate_key_line
from sidecar.audit.findings import StreamReport
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.cli.verify import verify_stream
from sidecar.config import Settings
from sidecar.storage.embedded import EmbeddedRedis
from tests.auditsupport import AUDIT_STREAM, records_for, send
from tests.conftest import Proxy, ProxyFactory

EVENTS_STREAM = "sidecar:auth-events"
TABLES = {"record": AUDIT_RECORDS, "event": AUTH_EVENTS}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.keys"
    path.write_text(generate_key_line("k1") + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
async def fresh_streams(redis_client: aioredis.Redis) -> None:
    await redis_client.delete(AUDIT_STREAM, EVENTS_STREAM)


async def verify(
    settings: Settings, redis: aioredis.Redis, stream: str, field: str
) -> StreamReport:
    keys = load_audit_keys(settings).integrity
    assert keys is not None, "an encryption key file implies a derived integrity key"
    return await verify_stream(redis, ArchivedStream(stream, field, TABLES[field]), keys)


def kinds(report: StreamReport) -> Counter[str]:
    found: Counter[str] = Counter()
    for writer in [*report.writers, report.unattributed]:
        found.update(writer.counts)
    return found


async def entries(redis: aioredis.Redis) -> list[tuple[bytes, bytes]]:
    raw: Any = await redis.xrange(AUDIT_STREAM)
    return [(entry_id, fields[b"record"]) for entry_id, fields in raw]


async def started(start_proxy: ProxyFactory, key_file: Path) -> Proxy:
    proxy: Proxy = await start_proxy(
        audit={"encryption_key_file": str(key_file)},
        rate_limits={"unauthenticated_per_ip": None},
        routes=[
            {"path": "/public/**", "public": True},
            {"path": "/v1/**", "scopes": ["orders:read"]},
        ],
    )
    return proxy


@pytest.mark.usefixtures("fresh_streams")
async def test_a_sidecars_records_and_events_verify_clean_and_tampering_is_found(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, key_file: Path
) -> None:
    proxy = await started(start_proxy, key_file)
    settings = proxy.server.sidecar.settings
    sent = [await send(proxy, "POST", f"/public/{n}", data=b'{"n": 1}') for n in range(6)]
    refused = [await send(proxy, "GET", "/v1/x", headers={"Authorization": "Bearer nope"})]
    assert {s.status for s in sent} == {200}
    assert refused[0].status == 401
    await records_for(redis_client, [s.request_id for s in sent])

    report = await verify(settings, redis_client, AUDIT_STREAM, "record")
    assert report.findings == 0, kinds(report)
    assert report.entries == 6
    events = await verify(settings, redis_client, EVENTS_STREAM, "event")
    assert events.findings == 0, kinds(events)
    assert events.entries >= 1

    stored = await entries(redis_client)
    # A ciphertext swapped between two records: both decrypt-bound and MAC'd, so both flagged.
    first, second = json.loads(stored[1][1]), json.loads(stored[2][1])
    first["request"]["raw_body"], second["request"]["raw_body"] = (
        second["request"]["raw_body"],
        first["request"]["raw_body"],
    )
    # An edited record: one byte of its status changed, its MAC kept.
    edited = stored[4][1].replace(b'"status":200', b'"status":201')
    assert edited != stored[4][1]
    await redis_client.xdel(AUDIT_STREAM, stored[3][0])  # a deleted record
    pipe = redis_client.pipeline(transaction=False)
    for entry_id, document in ((stored[1][0], first), (stored[2][0], second)):
        pipe.xdel(AUDIT_STREAM, entry_id)
        pipe.xadd(AUDIT_STREAM, {"record": json.dumps(document, separators=(",", ":"))})
    pipe.xdel(AUDIT_STREAM, stored[4][0])
    pipe.xadd(AUDIT_STREAM, {"record": edited})
    await pipe.execute()

    found = kinds(await verify(settings, redis_client, AUDIT_STREAM, "record"))
    assert found["gap"] >= 1, found
    assert found["altered"] + found["forged"] >= 3, found  # two swapped, one edited


@pytest.mark.usefixtures("fresh_streams")
async def test_records_replayed_from_the_spool_after_an_outage_verify_clean(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    redis_server: EmbeddedRedis,
    key_file: Path,
) -> None:
    proxy = await started(start_proxy, key_file)
    settings = proxy.server.sidecar.settings
    before = await send(proxy, "GET", "/public/before")
    await records_for(redis_client, [before.request_id])
    redis_server.stop()
    try:
        during = [await send(proxy, "GET", f"/public/during/{n}") for n in range(5)]
        assert {s.status for s in during} == {200}
    finally:
        redis_server.start()
    fresh = aioredis.Redis.from_url(redis_server.url)
    try:
        # The embedded Redis keeps no data across a restart: what comes back is the replay.
        await records_for(fresh, [s.request_id for s in during], within=15)
        after = await send(proxy, "GET", "/public/after")
        await records_for(fresh, [after.request_id])
        report = await verify(settings, fresh, AUDIT_STREAM, "record")
        # The record before the outage went with Redis: a gap at the writer's start, reported
        # honestly; every record written since chains without a finding.
        assert kinds(report) == Counter({"gap": 1}), kinds(report)
        assert report.entries == 6
    finally:
        await fresh.aclose()
