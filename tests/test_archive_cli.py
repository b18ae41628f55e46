"""SPEC §15: `sidecar archive migrate` and `sidecar archive status` through the real command line,
against the tests' real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import redis.asyncio as aioredis

from sidecar.archive.partitions import days_around
from sidecar.archive.schema import SCHEMA_VERSION
from sidecar.storage.embedded import EmbeddedRedis, free_port
from tests.archivereading import AUDIT, EVENTS, archive, archive_config, wait_for_row_statistics
from tests.helpers import write_config
from tests.keysupport import sidecar_cli
from tests.readsupport import seed, seeded

EXIT_FAILURE, EXIT_USAGE = 1, 2
RECORD_TABLES = ["audit_records", "auth_events", "admin_events"]


def catalogue(url: str) -> tuple[list[str], list[int]]:
    """(every table of the database, the schema versions recorded)."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') "
            "AND relnamespace = 'public'::regnamespace ORDER BY relname"
        ).fetchall()
        versions = conn.execute("SELECT version FROM sidecar_schema_version").fetchall()
    return [name for (name,) in tables], [version for (version,) in versions]


async def test_migrate_is_idempotent_also_when_run_concurrently(
    tmp_path: Path, redis_server: EmbeddedRedis, archive_url: str
) -> None:
    config = archive_config(tmp_path / "sidecar.yaml", redis_server.url, archive_url)
    together = await asyncio.gather(
        *(sidecar_cli("archive", "migrate", "--config", config) for _ in range(3))
    )
    for result in together:
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"archive schema at version {SCHEMA_VERSION}\n"
    tables, versions = catalogue(archive_url)

    again = await sidecar_cli("archive", "migrate", "--json", "--config", config)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"schema_version": SCHEMA_VERSION}
    assert catalogue(archive_url) == (tables, versions)  # nothing made twice, nothing lost
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    for table in [*RECORD_TABLES, "activity_minutes", "chain_checkpoints"]:
        assert table in tables
    # The partitions ahead of need: yesterday to three days ahead (UTC; PostgreSQL's clock is
    # this machine's).
    with psycopg.connect(archive_url) as conn:
        row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    for day in days_around(row[0]):
        assert f"audit_records_p{day:%Y%m%d}" in tables


async def test_status_shows_lag_partitions_rows_and_bytes(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, archive_url: str
) -> None:
    config = archive_config(tmp_path / "sidecar.yaml", redis_server.url, archive_url)
    # Five records two minutes old in Redis, the first three archived; no event archived yet.
    await seed(redis_client, [(120_000 - n, seeded()) for n in range(5)])
    ids = await archive(redis_client, archive_url, AUDIT, through="+")
    await redis_client.xgroup_create(AUDIT.stream, "sidecar-archiver", id=ids[2])
    await redis_client.xadd(EVENTS.stream, {"event": b"{}"})
    await wait_for_row_statistics(archive_url, "audit_records", 5)

    text, as_json = await asyncio.gather(
        sidecar_cli("archive", "status", "--config", config),
        sidecar_cli("archive", "status", "--json", "--config", config),
    )
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["schema_version"] == SCHEMA_VERSION
    audit, events, admin = status["streams"]
    assert (audit["stream"], audit["table"]) == ("sidecar:audit", "audit_records")
    assert audit["redis_entries"] == 5
    assert audit["pending"] == 0
    # Two entries after the group's last-delivered id wait: the older is ~2 minutes old.
    assert 100 <= audit["lag_s"] <= 300
    assert events["redis_entries"] == 1
    assert events["lag_s"] == 0  # no group yet: nothing was asked to archive
    assert admin["stream"] == "sidecar:admin-events"

    tables = {table["table"]: table for table in status["tables"]}
    assert set(tables) == set(RECORD_TABLES)
    assert tables["audit_records"]["rows"] == 5
    assert tables["auth_events"]["rows"] == 0
    with_rows = [p for p in tables["audit_records"]["partitions"] if p["rows"]]
    assert sum(p["rows"] for p in with_rows) == 5
    assert all(p["bytes"] > 0 for p in tables["audit_records"]["partitions"])
    assert status["rows"] == 5
    assert status["bytes"] == sum(table["bytes"] for table in status["tables"])
    assert status["archive"] == archive_url.replace("postgres@", "***@")

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"schema version {SCHEMA_VERSION}" in lines[0]
    audit_line = next(line for line in lines if line.startswith("sidecar:audit "))
    table_name, lag, pending, in_redis = audit_line.split()[1:]
    assert (table_name, pending, in_redis) == ("audit_records", "0", "5")
    assert 100 <= float(lag) <= 300
    partition_line = next(line for line in lines if line.startswith(with_rows[0]["partition"]))
    assert partition_line.split()[1:] == [str(with_rows[0]["rows"]), str(with_rows[0]["bytes"])]
    assert lines[-1].split() == ["total", "5", str(status["bytes"])]


async def test_status_of_a_database_never_migrated(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, archive_url: str
) -> None:
    config = archive_config(tmp_path / "sidecar.yaml", redis_server.url, archive_url)
    result = await sidecar_cli("archive", "status", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "schema version 0" in result.stdout
    assert "sidecar archive migrate" in result.stdout


async def test_without_an_archive_url_both_are_usage_errors(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    config = str(write_config(tmp_path / "plain.yaml", {"redis": {"url": redis_server.url}}))
    results = await asyncio.gather(
        sidecar_cli("archive", "migrate", "--config", config),
        sidecar_cli("archive", "status", "--json", "--config", config),
    )
    for result in results:
        assert result.returncode == EXIT_USAGE
        assert "archive.url" in result.stderr
        assert result.stdout == ""


async def test_an_unreachable_archive_is_a_runtime_failure_that_masks_the_password(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    url = f"postgresql://sidecar:pg-s3cret@127.0.0.1:{free_port()}/sidecar"  # nothing listens
    config = archive_config(tmp_path / "down.yaml", redis_server.url, url)
    result = await sidecar_cli("archive", "migrate", "--config", config)
    assert result.returncode == EXIT_FAILURE
    assert "cannot reach the archive at postgresql://sidecar:***@127.0.0.1" in result.stderr
    assert "pg-s3cret" not in result.stderr + result.stdout
