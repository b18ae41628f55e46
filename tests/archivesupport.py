"""Helpers shared by the archive's tests: records as a writer seals them, an archiver driven
step by step over the tests' Redis and PostgreSQL, and what the archive holds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
import redis.asyncio as aioredis

from sidecar.archive.archiver import Archiver
from sidecar.archive.store import ArchiveStore
from sidecar.archive.tables import AUDIT_RECORDS, AUTH_EVENTS, ArchivedStream
from sidecar.audit.integrity import IntegrityKeys, Sealed, seal
from sidecar.config import Archive
from sidecar.metrics import Metrics

RECORDS = ArchivedStream("t:audit", "record", AUDIT_RECORDS)
EVENTS = ArchivedStream("t:events", "event", AUTH_EVENTS)
WRITER = "0123456789abcdef"


def iso(moment: datetime) -> str:
    """A record's `ts` as the sidecar writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def document(request_id: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    """A SPEC §7 record's metadata (content fields as encrypted tokens: never read here)."""
    return {
        "v": 1,
        "ts": iso(ts),
        "request_id": request_id,
        "method": "GET",
        "path": "enc:v2:k:AAAA",
        "client_ip": "127.0.0.1",
        "key_name": None,
        "key_id": None,
        "request": {"body_bytes": 0},
        "response": {"status": 200, "body_bytes": 2},
        "duration_ms": 1.0,
        **fields,
    }


def chained(
    stream: str, documents: Sequence[dict[str, Any]], keys: IntegrityKeys | None = None
) -> list[Sealed]:
    """`documents` sealed as one writer (`WRITER`) seals them: seq 1, 2, … chained by digest."""
    sealed, prev = [], ""
    for seq, fields in enumerate(documents, start=1):
        body = json.dumps(fields, separators=(",", ":")).encode()
        one = seal(stream, body, writer=WRITER, seq=seq, prev=prev, keys=keys)
        sealed.append(one)
        prev = one.digest
    return sealed


def make_archiver(
    redis: aioredis.Redis,
    url: str,
    *,
    consumer: str = "fedcba9876543210",
    streams: Sequence[ArchivedStream] = (RECORDS, EVENTS),
    retention_days: int = 90,
    integrity: IntegrityKeys | None = None,
    metrics: Metrics | None = None,
    **settings: Any,
) -> Archiver:
    """An archiver over the tests' Redis and this test's database; keyword `archive` settings."""
    archive = Archive(url=url, **settings)
    return Archiver(
        redis,
        ArchiveStore(url, archive.timeout_s),
        streams,
        consumer=consumer,
        settings=archive,
        retention_days=retention_days,
        integrity=integrity,
        metrics=metrics or Metrics(),
    )


async def query(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows `statement` returns, on a connection of its own."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def archived_request_ids(url: str, table: str = "audit_records") -> Counter[str]:
    """How many rows each request id has in `table` (every one should have exactly one); none
    before the archiver has created the table."""
    if await query(url, "SELECT to_regclass(%s)", table) == [(None,)]:
        return Counter()
    rows = await query(url, f"SELECT request_id FROM {table}")
    return Counter(request_id for (request_id,) in rows)


async def counted(url: str) -> dict[tuple[str, str], int]:
    """The activity counters summed over minutes: {(key_id, outcome): count}."""
    rows = await query(
        url, "SELECT key_id, outcome, sum(count)::bigint FROM activity_minutes GROUP BY 1, 2"
    )
    return {(key_id, outcome): int(total) for key_id, outcome, total in rows}


async def send_until(
    session: aiohttp.ClientSession, url: str, answered: set[str], stop: asyncio.Event, tag: str
) -> None:
    """GET `url` under fresh request ids until `stop`; note each one that got a whole 200
    answer (it has a durable record). A refused or cut-off request is simply not noted."""
    while not stop.is_set():
        request_id = f"{tag}-{uuid.uuid4().hex}"
        try:
            async with session.get(
                url, headers={"X-Request-Id": request_id}, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                await response.read()
                if response.status == 200:
                    answered.add(request_id)
        except (aiohttp.ClientError, TimeoutError):
            if not stop.is_set():
                await asyncio.sleep(0.01)  # the process is gone: not a busy loop


async def health(
    session: aiohttp.ClientSession, health_url: str
) -> tuple[int, dict[str, Any], str]:
    """`/readyz`'s status and body, and `/metrics`' text, from a health port."""
    async with session.get(health_url + "/readyz") as response:
        status, body = response.status, await response.json()
    async with session.get(health_url + "/metrics") as response:
        return status, body, await response.text()
