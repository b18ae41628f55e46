"""SPEC §15: with `archive.url`, `audit tail|query` and `events tail` read the archive and the
Redis window together, each entry once, in stream-id order; the filters hold across both. The
entries are archived with the archiver's own row extraction and insert into the real tables of
the tests' real PostgreSQL, then trimmed from Redis as its window trim does."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.archive import reader
from sidecar.archive.database import connect
from sidecar.archive.reader import Entry, merge_by_id
from sidecar.audit.crypto import BodyCipher, generate_key_line
from sidecar.audit.record import dumps_record
from sidecar.storage.embedded import EmbeddedRedis, free_port
from tests.archivereading import AUDIT, EVENTS, archive, archive_config, trim_before
from tests.audit_exchanges import an_event
from tests.keysupport import sidecar_cli
from tests.readsupport import (
    a_record,
    following,
    json_lines,
    next_line,
    seed,
    seeded,
    stop_following,
)


def ids_of(result: Any) -> list[str]:
    return [document["request_id"] for document in json_lines(result)]


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis, archive_url: str) -> str:
    return archive_config(tmp_path / "sidecar.yaml", redis_server.url, archive_url)


async def test_audit_tail_and_query_read_the_archive_and_the_window_once_each(
    config: str, redis_client: aioredis.Redis, archive_url: str
) -> None:
    entries = [
        seeded(404, "/v1/orders/0", "beta"),  # archive only (trimmed from Redis)
        seeded(200, "/v1/orders/1", "alpha"),  # archive only
        seeded(404, "/v1/orders/2", "beta"),  # both
        seeded(404, "/v2/orders/3", "beta"),  # both; not under /v1/orders/
        seeded(200, "/v1/orders/4", "beta"),  # both
        seeded(404, "/v1/orders/5", "beta"),  # Redis only (not archived yet)
        seeded(500, "/v1/orders/6", None),  # Redis only
    ]
    await seed(redis_client, [(60_000 - 1000 * n, entry) for n, entry in enumerate(entries)])
    stored: Any = await redis_client.xrange(AUDIT.stream)
    ids = [entry_id.decode() for entry_id, _fields in stored]
    assert await archive(redis_client, archive_url, AUDIT, through=ids[4]) == ids[:5]
    await trim_before(redis_client, AUDIT.stream, ids[2])
    assert await redis_client.xlen(AUDIT.stream) == 5

    def cli(*arguments: str) -> Any:
        return sidecar_cli("audit", *arguments, "--json", "--config", config)

    last_six, everything, queried, filtered, text = await asyncio.gather(
        cli("tail", "-n", "6"),  # five in Redis, the sixth from the archive
        cli("tail", "-n", "100"),
        cli("query", "--since", "1h"),
        cli("query", "--status", "4xx", "--key-name", "beta", "--path", "/v1/orders/**"),
        sidecar_cli("audit", "tail", "-n", "3", "--config", config),
    )
    wanted = [entry.request_id for entry in entries]
    assert ids_of(last_six) == wanted[1:]
    assert ids_of(everything) == wanted
    assert ids_of(queried) == wanted
    assert ids_of(filtered) == [wanted[0], wanted[2], wanted[5]]
    assert json_lines(everything)[0]["path"] == "/v1/orders/0"  # the archive's copy, whole
    assert text.returncode == 0, text.stderr
    assert [line.split("id=")[1] for line in text.stdout.splitlines()] == wanted[4:]


async def test_events_tail_reads_the_archive_and_the_window_once_each(
    config: str, redis_client: aioredis.Redis, archive_url: str
) -> None:
    names = ["missing_key", "invalid_secret", "revoked_key", "missing_scope", "rate_limited"]
    for n, name in enumerate(names):
        event = an_event(name, request_id=f"ev-{n}", method="GET", path=f"/v1/orders/{n}",
                         client_ip="198.51.100.7", detail=f"detail {n}", key_id=None,
                         key_name=None)  # fmt: skip
        await redis_client.xadd(EVENTS.stream, {"event": json.dumps(event)})
    stored: Any = await redis_client.xrange(EVENTS.stream)
    ids = [entry_id.decode() for entry_id, _fields in stored]
    await archive(redis_client, archive_url, EVENTS, through=ids[3])
    await trim_before(redis_client, EVENTS.stream, ids[2])

    every, last_four = await asyncio.gather(
        sidecar_cli("events", "tail", "--json", "--config", config),
        sidecar_cli("events", "tail", "-n", "4", "--json", "--config", config),
    )
    assert [event["event"] for event in json_lines(every)] == names
    assert [event["event"] for event in json_lines(last_four)] == names[1:]


async def test_follow_shows_the_archive_and_the_window_then_new_entries(
    config: str, redis_client: aioredis.Redis, archive_url: str
) -> None:
    entries = [seeded(path=f"/v1/orders/{n}") for n in range(3)]
    await seed(redis_client, [(30_000 - 1000 * n, entry) for n, entry in enumerate(entries)])
    await archive(redis_client, archive_url, AUDIT)
    await redis_client.delete(AUDIT.stream)  # all archived, the window empty
    async with following("audit", "tail", "--config", config) as process:
        for entry in entries:
            assert (await next_line(process, 20))["request_id"] == entry.request_id
        fresh = seeded(status=201)
        await redis_client.xadd(AUDIT.stream, {"record": dumps_record(a_record(fresh))})
        assert (await next_line(process, 10))["request_id"] == fresh.request_id
        await stop_following(process, signal.SIGINT)


async def test_the_path_is_matched_after_decryption_in_either_source(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, archive_url: str
) -> None:
    key_file = tmp_path / "audit.keys"
    key_file.write_text(generate_key_line("k2026") + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    cipher = BodyCipher.from_file(key_file)
    config = archive_config(
        tmp_path / "encrypted.yaml",
        redis_server.url,
        archive_url,
        audit={"encryption_key_file": str(key_file)},
    )
    entries = [seeded(path=path) for path in ["/v1/orders/1", "/v2/x", "/v1/orders/2", "/v1/a"]]
    for entry in entries:
        sealed = cipher.encrypt_record(a_record(entry))
        await redis_client.xadd(AUDIT.stream, {"record": dumps_record(sealed)})
    stored: Any = await redis_client.xrange(AUDIT.stream)
    await archive(redis_client, archive_url, AUDIT, through=stored[1][0].decode())
    await trim_before(redis_client, AUDIT.stream, stored[2][0].decode())
    with_path = await sidecar_cli(
        "audit", "query", "--path", "/v1/orders/*", "--json", "--config", config
    )
    assert ids_of(with_path) == [entries[0].request_id, entries[2].request_id]
    assert json_lines(with_path)[0]["path"] == "/v1/orders/1"  # decrypted from the archive


async def test_with_the_archive_down_the_readers_warn_and_read_the_redis_window(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    url = f"postgresql://sidecar:pg-s3cret@127.0.0.1:{free_port()}/sidecar"  # nothing listens
    config = archive_config(tmp_path / "down.yaml", redis_server.url, url)
    entries = [seeded(path=f"/v1/orders/{n}") for n in range(2)]
    await seed(redis_client, [(5000 - 1000 * n, entry) for n, entry in enumerate(entries)])
    result = await sidecar_cli("audit", "query", "--json", "--config", config)
    assert ids_of(result) == [entry.request_id for entry in entries]
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(
        "sidecar: warning: cannot reach the archive at postgresql://sidecar:***@"
    )
    assert warning.endswith(": reading Redis only")
    assert "pg-s3cret" not in result.stderr


async def test_the_tail_comes_from_the_archive_alone_when_redis_holds_nothing(
    redis_client: aioredis.Redis, archive_url: str
) -> None:
    entries = [seeded(path=f"/v1/orders/{n}") for n in range(5)]
    await seed(redis_client, [(10_000 - 1000 * n, entry) for n, entry in enumerate(entries)])
    stored: Any = await redis_client.xrange(AUDIT.stream)
    await archive(redis_client, archive_url, AUDIT)
    await redis_client.delete(AUDIT.stream)
    conn = await connect(archive_url, 5)
    try:
        newest = await reader.tail(conn, redis_client, AUDIT, 3)
        everything = await reader.tail(conn, redis_client, AUDIT, 50)
    finally:
        await conn.close()
    assert newest == stored[2:]  # the same ids and the same bytes as Redis held
    assert everything == stored


async def entries_of(*ids: str, tag: bytes) -> AsyncIterator[Entry]:
    for entry_id in ids:
        yield entry_id.encode(), {b"from": tag}


async def test_the_merge_is_in_stream_id_order_with_the_archives_copy_where_both_hold_one() -> None:
    archived = entries_of("1-0", "2-0", "10-0", "10-2", tag=b"archive")
    window = entries_of("2-0", "9-5", "10-1", "10-2", "11-0", tag=b"redis")
    merged = [
        (entry_id.decode(), fields[b"from"])
        async for entry_id, fields in merge_by_id(archived, window)
    ]
    assert merged == [
        ("1-0", b"archive"),
        ("2-0", b"archive"),
        ("9-5", b"redis"),  # numeric order: 9 before 10, though "10" < "9" as text
        ("10-0", b"archive"),
        ("10-1", b"redis"),
        ("10-2", b"archive"),
        ("11-0", b"redis"),
    ]
