"""Helpers for the tests of the reading commands (`audit tail|query`, `events tail`): records
made by the sidecar's own record builder and stored with ids and ts in the past, the output
read as JSON lines, and `--follow` run as an operator pipes it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from sidecar.audit.events import timestamp
from sidecar.audit.record import capture, dumps_record
from tests.audit_exchanges import a_record as recorded
from tests.helpers import sidecar_env
from tests.keysupport import Completed

AUDIT_STREAM = "sidecar:audit"


@dataclass(frozen=True)
class Seeded:
    request_id: str
    status: int
    path: str
    key_name: str | None


def a_record(entry: Seeded, ts: str | None = None) -> dict[str, object]:
    return recorded(
        ts=timestamp() if ts is None else ts,
        request_id=entry.request_id,
        method="POST",
        path=entry.path,
        query="a=1",
        client_ip="203.0.113.9",
        key_name=entry.key_name,
        key_id=None if entry.key_name is None else f"id-{entry.key_name}",
        scopes=[] if entry.key_name is None else ["orders:write"],
        request_headers={"content-type": "application/json"},
        raw_body=capture(b'{"qty":1}', 65536),
        mapped_body=None,
        response_status=entry.status,
        response_headers={},
        response_body=capture(b"{}", 65536),
        duration_ms=3.25,
        upstream_ms=2.5,
        card_numbers="redact",
        credentials="redact",
    )


async def seed(redis: aioredis.Redis, entries: list[tuple[int, Seeded]]) -> list[dict[str, Any]]:
    """Add records made and stored `age_ms` in the past (their ts and their stream ids), oldest
    first; their documents."""
    now_ms = int(time.time() * 1000)
    documents: list[dict[str, Any]] = []
    for age_ms, entry in sorted(entries, key=lambda item: -item[0]):
        document = a_record(entry, ts_of(now_ms - age_ms))
        stream_id = f"{now_ms - age_ms}-{len(documents)}"
        await redis.xadd(AUDIT_STREAM, {"record": dumps_record(document)}, id=stream_id)
        documents.append(json.loads(dumps_record(document)))
    return documents


def ts_of(milliseconds: int) -> str:
    return timestamp(datetime.fromtimestamp(milliseconds / 1000, UTC))


def seeded(status: int = 200, path: str = "/v1/orders/1", key_name: str | None = "alpha") -> Seeded:
    return Seeded(f"cli-{uuid.uuid4().hex}", status, path, key_name)


def json_lines(result: Completed) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@asynccontextmanager
async def following(*arguments: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m sidecar ARGUMENTS --follow --json`, running for the length of the block.

    Its stdout is a pipe, and Python's own buffering is left on (no PYTHONUNBUFFERED), as when
    an operator pipes the output into `jq`: each record must still arrive as it comes."""
    env = sidecar_env()
    env.pop("PYTHONUNBUFFERED", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *arguments, "--follow", "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def next_line(process: asyncio.subprocess.Process, within: float) -> dict[str, Any]:
    assert process.stdout is not None
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), within)
    assert line, (await process.stderr.read()).decode()  # EOF: it exited; say why
    document: dict[str, Any] = json.loads(line)
    return document


async def stop_following(process: asyncio.subprocess.Process, signum: int) -> None:
    """Ctrl-C (SIGINT) or SIGTERM ends --follow, successfully and promptly."""
    process.send_signal(signum)
    assert await asyncio.wait_for(process.wait(), 5) == 0
