"""Helpers shared by the audit-trail tests: a request sent through the proxy under its own
request id, the §7 records it left in `sidecar:audit`, and the secrets no record may hold."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from multidict import CIMultiDictProxy

from tests.conftest import Proxy
from tests.helpers import wait_until
from tests.keysupport import bearer

AUDIT_STREAM = "sidecar:audit"
KEY_HEADER = "x-api-key"

# SPEC §7, level by level.
RECORD_FIELDS = {
    "v", "ts", "request_id", "method", "path", "query", "client_ip", "key_name", "key_id",
    "scopes", "request", "response", "duration_ms", "upstream_ms",
}  # fmt: skip
REQUEST_FIELDS = {
    "headers", "raw_body", "mapped_body", "body_encoding", "body_truncated", "body_bytes",
    "inspected",
}  # fmt: skip
RESPONSE_FIELDS = {"status", "headers", "body", "body_truncated", "body_bytes"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
NEVER_RECORDED = {"authorization", KEY_HEADER, "cookie", "set-cookie", "proxy-authorization"}

# What the data guard must keep out of every record.
CARD = "4111 1111 1111 1111"  # Luhn-valid test numbers
OTHER_CARD = "5500-0000-0000-0004"
PASSWORD = "hunter2-Pw-7f3a9c"


@dataclass
class Sent:
    request_id: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def send(
    proxy: Proxy,
    method: str,
    path: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Sent:
    request_id = f"audit-{uuid.uuid4().hex}"
    sent = {"X-Request-Id": request_id, **(bearer(key) if key else {}), **(headers or {})}
    async with proxy.request(method, path, headers=sent, data=data) as response:
        body = await response.read()
        assert response.headers["X-Request-Id"] == request_id
        return Sent(request_id, response.status, response.headers, body)


async def audit_records(redis: aioredis.Redis) -> list[dict[str, Any]]:
    """Every record in the audit stream, oldest first."""
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return [json.loads(fields[b"record"]) for _id, fields in entries]


async def records_for(
    redis: aioredis.Redis, request_ids: Collection[str], *, within: float = 5
) -> dict[str, list[dict[str, Any]]]:
    """The records of each request id, once every one of them is in the stream."""
    found: dict[str, list[dict[str, Any]]] = {}

    async def all_there() -> bool:
        found.clear()
        for record in await audit_records(redis):
            found.setdefault(record["request_id"], []).append(record)
        return all(request_id in found for request_id in request_ids)

    await wait_until(all_there, within=within)
    return found


async def the_record(redis: aioredis.Redis, request_id: str) -> dict[str, Any]:
    """The one record of `request_id` (exactly one: a second is a failure)."""
    records = (await records_for(redis, [request_id]))[request_id]
    assert len(records) == 1, records
    assert_shape(records[0])
    return records[0]


def assert_shape(record: dict[str, Any]) -> None:
    """The §7 key sets at each level, and the type of every field."""
    # SPEC §17: the writer's chain members, and a mac when an integrity key is set.
    assert set(record) - {"mac"} == RECORD_FIELDS | {"writer", "seq", "prev"}
    assert set(record["request"]) == REQUEST_FIELDS
    assert set(record["response"]) == RESPONSE_FIELDS
    assert record["v"] == 1
    assert TS.match(record["ts"]), record["ts"]
    moment = datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 60
    for name in ("request_id", "method", "path", "query", "client_ip"):
        assert isinstance(record[name], str), name
    for name in ("key_name", "key_id"):
        assert record[name] is None or isinstance(record[name], str), name
    assert isinstance(record["scopes"], list)
    assert all(isinstance(scope, str) for scope in record["scopes"])
    request, response = record["request"], record["response"]
    for headers in (request["headers"], response["headers"]):
        assert isinstance(headers, dict)
        for name, value in headers.items():
            assert name == name.lower()
            assert isinstance(value, str)
            assert name not in NEVER_RECORDED, name
    assert isinstance(request["raw_body"], str)
    assert isinstance(request["mapped_body"], str)
    assert request["body_encoding"] in ("utf-8", "base64")
    assert type(request["body_truncated"]) is bool
    assert type(request["body_bytes"]) is int
    assert type(request["inspected"]) is bool
    assert type(response["status"]) is int
    assert isinstance(response["body"], str)
    assert type(response["body_truncated"]) is bool
    assert type(response["body_bytes"]) is int
    assert type(record["duration_ms"]) is float
    assert record["duration_ms"] > 0
    upstream_ms = record["upstream_ms"]
    assert upstream_ms is None or type(upstream_ms) is float
