"""SPEC §17 over the archive: `audit verify` walks the archive's rows and then the Redis window,
each entry once, with the checkpoints retention wrote when it dropped a day. Clean chains split
between the two verify clean; a row edited or deleted in PostgreSQL, or a forged checkpoint, is
found. Chains are sealed as a writer seals them, archived with the archiver's own insert."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.archive.database import Connection, connect
from sidecar.archive.retention import drop_expired
from sidecar.audit.events import timestamp
from sidecar.audit.findings import StreamReport
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.record import dumps_record
from sidecar.cli.verify import verify_stream
from sidecar.storage.embedded import EmbeddedRedis
from tests.archivereading import AUDIT, EVENTS, archive, archive_config, execute, trim_before
from tests.chainsupport import ChainWriter, Keyed, a_document, integrity_keys, kinds
from tests.keysupport import sidecar_cli

EXIT_OK, EXIT_FINDINGS = 0, 1


@pytest.fixture
async def conn(archive_url: str) -> AsyncIterator[Connection]:
    connection = await connect(archive_url, 5)
    yield connection
    await connection.close()


async def verified(
    redis: aioredis.Redis, conn: Connection, keys: IntegrityKeys | None
) -> StreamReport:
    client: Any = redis
    return await verify_stream(client, AUDIT, keys, conn=conn)


async def split_chain(
    redis: aioredis.Redis, url: str, writer: ChainWriter, count: int = 6
) -> list[str]:
    """`count` records: the first four archived, the first two trimmed from Redis (so two are
    in the archive only, two in both, the rest in Redis only); their entry ids."""
    ids = [entry_id for entry_id, _document in await writer.append(redis, count)]
    assert await archive(redis, url, AUDIT, through=ids[3]) == ids[:4]
    await trim_before(redis, AUDIT.stream, ids[2])
    return ids


async def test_a_chain_split_between_the_archive_and_the_window_verifies_clean(
    redis_client: aioredis.Redis, archive_url: str, conn: Connection
) -> None:
    keys = integrity_keys()
    writer = ChainWriter(AUDIT.stream, keys)
    await split_chain(redis_client, archive_url, writer)
    report = await verified(redis_client, conn, keys)
    assert report.findings == 0
    assert report.entries == 6  # the four in both were walked once
    (chain,) = report.writers
    assert (chain.records, chain.replays, chain.first_seq, chain.last_seq) == (6, 0, 1, 6)


async def test_a_row_edited_in_postgresql_is_found_though_redis_holds_the_original(
    redis_client: aioredis.Redis, archive_url: str, conn: Connection
) -> None:
    keys = integrity_keys()
    writer = ChainWriter(AUDIT.stream, keys)
    ids = await split_chain(redis_client, archive_url, writer)
    touched = execute(
        archive_url,
        "UPDATE audit_records SET document = replace(document, '/v1/orders/3', '/v1/orders/9') "
        "WHERE seq = 3",
    )
    assert touched == 1
    report = await verified(redis_client, conn, keys)
    assert kinds(report) == {"altered": 1}
    (finding,) = report.writers[0].shown
    assert (finding.seq, finding.entry_id) == (3, ids[2])


async def test_a_row_deleted_from_postgresql_is_a_gap(
    redis_client: aioredis.Redis, archive_url: str, conn: Connection
) -> None:
    keys = integrity_keys()
    writer = ChainWriter(AUDIT.stream, keys)
    await split_chain(redis_client, archive_url, writer)
    assert execute(archive_url, "DELETE FROM audit_records WHERE seq = 2") == 1  # archive only
    report = await verified(redis_client, conn, keys)
    assert kinds(report) == {"gap": 1}
    (finding,) = report.writers[0].shown
    assert (finding.seq, finding.last_seq) == (2, 2)


def aged(writer: ChainWriter, days: int) -> bytes:
    """The writer's next record, sealed, made `days` ago."""
    document = json.loads(a_document(AUDIT.stream, writer.seq + 1))
    document["ts"] = timestamp(datetime.now(UTC) - timedelta(days=days))
    return writer.seal(dumps_record(document))


async def test_a_day_dropped_by_retention_is_covered_by_its_checkpoint(
    redis_client: aioredis.Redis, archive_url: str, conn: Connection
) -> None:
    keys = integrity_keys()
    writer = ChainWriter(AUDIT.stream, keys)
    for days in (100, 100, 100, 0, 0):
        await redis_client.xadd(AUDIT.stream, {"record": aged(writer, days)})
    await writer.set_mark(redis_client)
    ids = await archive(redis_client, archive_url, AUDIT)
    await trim_before(redis_client, AUDIT.stream, ids[4])  # the window holds the newest only

    dropped = await drop_expired(conn, [AUDIT, EVENTS], 90, keys)
    assert any(name.startswith("audit_records_p") for name in dropped)
    report = await verified(redis_client, conn, keys)
    assert report.findings == 0
    (chain,) = report.writers
    assert (chain.checkpoint_seq, chain.records, chain.first_seq) == (3, 2, 4)

    # The checkpoint moved back a seq (to hide a deletion, say): its mac no longer matches, and
    # without it the dropped day is a gap.
    execute(archive_url, "UPDATE chain_checkpoints SET seq = 2")
    report = await verified(redis_client, conn, keys)
    assert kinds(report) == {"checkpoint": 1, "gap": 1}
    (finding,) = report.unattributed.shown
    assert "archive's checkpoint" in finding.detail


async def test_the_command_line_verifies_the_archive_and_exits_1_on_an_edit(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, archive_url: str
) -> None:
    keyed = Keyed(tmp_path, redis_server.url)
    config = archive_config(
        tmp_path / "archived.yaml",
        redis_server.url,
        archive_url,
        audit={"encryption_key_file": str(tmp_path / "audit.keys")},
    )
    records, events = ChainWriter(AUDIT.stream, keyed.keys), ChainWriter(EVENTS.stream, keyed.keys)
    record_ids = await keyed.append(redis_client, records, 4)
    event_ids = await keyed.append(redis_client, events, 3)
    await archive(redis_client, archive_url, AUDIT, through=record_ids[2])
    await archive(redis_client, archive_url, EVENTS, through=event_ids[1])
    await trim_before(redis_client, AUDIT.stream, record_ids[1])
    await trim_before(redis_client, EVENTS.stream, event_ids[2])

    clean = await sidecar_cli("audit", "verify", "--json", "--config", config)
    assert (clean.returncode, clean.stderr) == (EXIT_OK, "")
    summary = json.loads(clean.stdout.splitlines()[-1])
    assert (summary["ok"], summary["entries"], summary["findings"]) == (True, 7, 0)

    execute(archive_url, "UPDATE auth_events SET document = replace(document, 'ev-1', 'ev-X')")
    edited = await sidecar_cli("audit", "verify", "--config", config)
    assert edited.returncode == EXIT_FINDINGS, edited.stderr
    assert edited.stdout.splitlines()[-1].endswith("1 findings: FAILED")
    assert "altered" in edited.stdout


async def test_since_verifies_only_what_is_newer_in_the_archive_too(
    redis_client: aioredis.Redis, archive_url: str, conn: Connection
) -> None:
    keys = integrity_keys()
    writer = ChainWriter(AUDIT.stream, keys)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for n, days in enumerate((3, 3, 3, 0, 0, 0)):  # records' ts and stream ids as they are made
        stream_ms = now_ms - days * 86_400_000 + n
        await redis_client.xadd(AUDIT.stream, {"record": aged(writer, days)}, id=f"{stream_ms}-0")
    await writer.set_mark(redis_client)
    ids = await archive(redis_client, archive_url, AUDIT, through=f"{now_ms + 3}-0")
    await trim_before(redis_client, AUDIT.stream, ids[3])  # the window: the last three
    assert execute(archive_url, "DELETE FROM audit_records WHERE seq = 2") == 1  # out of view

    client: Any = redis_client
    recent = await verify_stream(client, AUDIT, keys, conn=conn, since=timedelta(days=1))
    assert recent.findings == 0
    (chain,) = recent.writers
    assert (chain.records, chain.first_seq) == (3, 4)
    everything = await verified(redis_client, conn, keys)
    assert kinds(everything) == {"gap": 1}
