"""SPEC §10, §17: `sidecar audit verify` through the real command line, on streams a writer's
sealing filled in the tests' real Redis: exit codes, the text and `--json` output, warnings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.cli.verify import NO_KEY_WARNING
from sidecar.storage.embedded import EmbeddedRedis, free_port
from tests.chainsupport import AUDIT_STREAM, EVENTS_STREAM, ChainWriter, Keyed, add_raw
from tests.helpers import write_config
from tests.keysupport import Completed, sidecar_cli

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


@pytest.fixture
def keyed(tmp_path: Path, redis_server: EmbeddedRedis) -> Keyed:
    return Keyed(tmp_path, redis_server.url)


@pytest.fixture
def unkeyed_config(tmp_path: Path, redis_server: EmbeddedRedis) -> str:
    return str(write_config(tmp_path / "plain.yaml", {"redis": {"url": redis_server.url}}))


def verify(config: str, *options: str) -> Any:
    return sidecar_cli("audit", "verify", "--config", config, *options)


def json_objects(result: Completed) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_clean_streams_exit_0_with_a_line_per_writer(
    keyed: Keyed, redis_client: aioredis.Redis
) -> None:
    writers = [ChainWriter(AUDIT_STREAM, keyed.keys) for _ in range(2)]
    events = ChainWriter(EVENTS_STREAM, keyed.keys)
    for writer in [*writers, events]:
        await keyed.append(redis_client, writer, 3)
    table, as_json = await asyncio.gather(verify(keyed.config), verify(keyed.config, "--json"))

    assert (table.returncode, table.stderr) == (EXIT_OK, "")
    lines = table.stdout.splitlines()
    for writer in [*writers, events]:
        (line,) = [line for line in lines if f"writer {writer.writer}" in line]
        assert line.startswith(writer.stream)
        assert "records 3" in line
        assert line.endswith("ok")
    assert f"{AUDIT_STREAM}  6 entries, 2 writers, 0 findings" in lines
    assert lines[-1] == "verify (mac and chain): 2 streams, 9 entries, 0 findings: ok"

    assert (as_json.returncode, as_json.stderr) == (EXIT_OK, "")
    objects = json_objects(as_json)
    assert [o["type"] for o in objects] == ["writer"] * 2 + [
        "stream",
        "writer",
        "stream",
        "summary",
    ]
    assert objects[-1] == {
        "type": "summary", "ok": True, "streams": 2, "entries": 9, "findings": 0,
        "keyed": True, "since": None,
    }  # fmt: skip


async def test_a_deleted_record_exits_1_and_says_where(
    keyed: Keyed, redis_client: aioredis.Redis
) -> None:
    writer = ChainWriter(AUDIT_STREAM, keyed.keys)
    ids = await keyed.append(redis_client, writer, 4)
    await redis_client.xdel(AUDIT_STREAM, ids[1])
    table, as_json = await asyncio.gather(verify(keyed.config), verify(keyed.config, "--json"))

    assert table.returncode == EXIT_FINDINGS, table.stderr
    lines = table.stdout.splitlines()
    assert f"{AUDIT_STREAM}  writer {writer.writer}  records 3  replays 0  seq 1-4" in lines[0]
    assert lines[0].endswith("findings 1 (gap 1)")
    assert lines[1].strip().startswith("gap: seq 2  ")
    assert lines[-1].endswith("1 findings: FAILED")

    assert as_json.returncode == EXIT_FINDINGS
    objects = json_objects(as_json)
    (finding,) = [o for o in objects if o["type"] == "finding"]
    assert finding | {"detail": None} == {
        "type": "finding", "stream": AUDIT_STREAM, "writer": writer.writer, "kind": "gap",
        "seq": 2, "last_seq": 2, "entry": None, "detail": None,
    }  # fmt: skip
    assert objects[-1]["ok"] is False


async def test_forged_entries_are_listed_apart_from_the_writers(
    keyed: Keyed, redis_client: aioredis.Redis
) -> None:
    await keyed.append(redis_client, ChainWriter(AUDIT_STREAM, keyed.keys), 2)
    forged_id = await add_raw(redis_client, AUDIT_STREAM, ChainWriter(AUDIT_STREAM, None).seal())
    result = await verify(keyed.config)
    assert result.returncode == EXIT_FINDINGS
    assert f"{AUDIT_STREAM}  not in any writer's chain  findings 1 (forged 1)" in result.stdout
    assert f"forged: seq 1  entry {forged_id}  writer " in result.stdout
    assert "no mac, but an integrity key is configured" in result.stdout


async def test_cleartext_bodies_while_encryption_is_on_are_findings(
    keyed: Keyed, redis_client: aioredis.Redis
) -> None:
    writer = ChainWriter(AUDIT_STREAM, keyed.keys)
    await redis_client.xadd(AUDIT_STREAM, {"record": writer.seal()})  # bodies in cleartext
    await writer.set_mark(redis_client)
    result = await verify(keyed.config)
    assert result.returncode == EXIT_FINDINGS
    assert "content 7" in result.stdout  # path, query, both header sets and the three bodies
    assert "request.raw_body: cleartext while encryption is on" in result.stdout


async def test_without_a_key_it_warns_and_checks_the_chain(
    unkeyed_config: str, redis_client: aioredis.Redis
) -> None:
    await ChainWriter(AUDIT_STREAM, None).append(redis_client, 3)
    result, as_json = await asyncio.gather(verify(unkeyed_config), verify(unkeyed_config, "--json"))
    assert result.returncode == EXIT_OK
    assert result.stderr == f"sidecar: warning: {NO_KEY_WARNING}\n"
    assert "chain only: forged records cannot be told from real ones" in result.stderr
    assert result.stdout.splitlines()[-1].startswith("verify (chain only): ")
    assert json_objects(as_json)[-1]["keyed"] is False  # stdout stays JSON lines


async def test_since_limits_the_walk(keyed: Keyed, redis_client: aioredis.Redis) -> None:
    writer = ChainWriter(AUDIT_STREAM, keyed.keys)
    await writer.append(redis_client, 2, age_days=2)  # cleartext, but out of view
    await keyed.append(redis_client, writer, 2)
    result = await verify(keyed.config, "--since", "1d", "--json")
    assert result.returncode == EXIT_OK, result.stdout
    summary = json_objects(result)[-1]
    assert (summary["entries"], summary["since"]) == (2, "1d")


@pytest.mark.parametrize("since", ["yesterday", "3651d", "1x", "9" * 400 + "s"])
async def test_a_bad_since_is_a_usage_error(unkeyed_config: str, since: str) -> None:
    result = await verify(unkeyed_config, "--since", since)
    assert result.returncode == EXIT_USAGE, result.stdout
    assert "--since" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


async def test_an_unreachable_redis_exits_1(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = str(write_config(tmp_path / "down.yaml", {"redis": {"url": url}}))
    result = await verify(config)
    assert result.returncode == EXIT_FINDINGS
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_output_is_inert_on_a_terminal(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    hostile = "audit\x1b[2J\n\u202e"
    config = str(
        write_config(
            tmp_path / "hostile.yaml",
            {"redis": {"url": redis_server.url}, "audit": {"stream": hostile}},
        )
    )
    writer = ChainWriter(AUDIT_STREAM, None)
    await redis_client.xadd(hostile, {"record": writer.seal()})
    result = await verify(config)
    assert result.returncode == EXIT_OK, result.stderr
    for line in result.stdout.splitlines():
        assert line.isprintable(), repr(line)
    assert "audit\\x1b[2J\\n\\u202e" in result.stdout
