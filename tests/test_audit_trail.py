"""SPEC §7 (and §2 step 9) through the proxy: real TLS, a real upstream, a real Redis.

Each forwarded request leaves exactly one record in `sidecar:audit`, shaped as §7 says; the
data guard's masking and the route `map` show in what the upstream got and in the record;
refusals before routing are events, not records; while Redis is away records wait on disk and
come back exactly once; a full spool refuses requests rather than forward them unaudited;
bodies can be encrypted at rest; old entries are trimmed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.audit.crypto import generate_key_line
from sidecar.storage.embedded import EmbeddedRedis
from tests.auditsupport import (
    AUDIT_STREAM,
    CARD,
    KEY_HEADER,
    NEVER_RECORDED,
    OTHER_CARD,
    PASSWORD,
    Sent,
    audit_records,
    records_for,
    send,
    the_record,
)
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import PROBLEM_FIELDS, wait_until, write_config
from tests.keysupport import event_for, issue, keys_section, metric_value, sidecar_cli
from tests.upstream import UpstreamServer

EVENTS_STREAM = "sidecar:auth-events"
CAPTURE = 4096  # audit.max_body_bytes in these tests
INSPECT = 16384  # data_guard.max_inspect_bytes in these tests
ROUTES: list[dict[str, Any]] = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/orders/**", "scopes": ["orders:write"]},
    {
        "path": "/v1/customers",
        "methods": ["POST"],
        "scopes": ["customers:write"],
        "map": {"drop": ["/customer/ssn"], "rename": {"/customer/mail": "/customer/email"}},
    },
    {"path": "/v1/admin/**", "scopes": ["admin:manage"]},
]
SCOPES = ["orders:write", "customers:write"]

LETTERS = "abcdefghijklmnopqrstuvwxyz"


# -- helpers --------------------------------------------------------------------------------------


def digits(text: str) -> str:
    return re.sub(r"[\s-]", "", text)


def holds_no_secret(text: str) -> bool:
    plain = digits(text)
    return digits(CARD) not in plain and digits(OTHER_CARD) not in plain and PASSWORD not in text


async def metrics(proxy: Proxy) -> str:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        return await response.text()


async def audit_metric(proxy: Proxy, outcome: str) -> float:
    return metric_value(await metrics(proxy), "sidecar_audit_records_total", {"outcome": outcome})


@pytest.fixture
async def proxy(start_proxy: ProxyFactory, redis_client: aioredis.Redis) -> Proxy:
    started: Proxy = await start_proxy(
        keys=keys_section(header=KEY_HEADER),
        routes=ROUTES,
        audit={"max_body_bytes": CAPTURE},
        data_guard={"max_inspect_bytes": INSPECT},
    )
    return started


@pytest.fixture
async def key(proxy: Proxy, redis_client: aioredis.Redis) -> Any:
    return await issue(redis_client, proxy.server.sidecar.settings, "billing", SCOPES)


@pytest.fixture
async def redis_outage(redis_server: EmbeddedRedis) -> AsyncIterator[EmbeddedRedis]:
    """The tests' Redis, for a test to `.stop()`; running again afterwards whatever happened."""
    try:
        yield redis_server
    finally:
        if not redis_server.running:
            redis_server.start()


# -- the record, field by field -------------------------------------------------------------------


async def test_a_json_request_with_a_key(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = json.dumps({"qty": 2, "note": "héllo"}).encode()
    sent = await send(
        proxy,
        "POST",
        "/v1/orders/7?a=1&b=two",
        key=key.key,
        data=body,
        headers={
            "Content-Type": "application/json",
            KEY_HEADER: key.key,
            "Cookie": "session=c00kie",
            "X-Custom": "kept",
        },
    )
    assert sent.status == 200
    record = await the_record(redis_client, sent.request_id)

    assert record["request_id"] == sent.request_id
    assert record["method"] == "POST"
    assert record["path"] == "/v1/orders/7"
    assert record["query"] == "a=1&b=two"
    assert record["client_ip"] == "127.0.0.1"
    assert record["key_name"] == "billing"
    assert record["key_id"] == key.record.key_id
    assert record["scopes"] == list(key.record.scopes)

    request = record["request"]
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-custom"] == "kept"
    assert request["headers"]["x-request-id"] == sent.request_id
    assert request["headers"]["content-length"] == str(len(body))
    assert not NEVER_RECORDED & set(request["headers"])
    assert request["raw_body"] == body.decode()
    assert request["mapped_body"] == request["raw_body"]  # nothing to change
    assert request["body_encoding"] == "utf-8"
    assert request["body_truncated"] is False
    assert request["body_bytes"] == len(body)
    assert upstream.seen[-1].body == body

    response = record["response"]
    assert response["status"] == 200
    assert response["headers"]["x-upstream"] == "yes"
    assert response["headers"]["content-type"].startswith("application/json")
    assert response["body"] == sent.body.decode()
    assert response["body_truncated"] is False
    assert response["body_bytes"] == len(sent.body)
    assert 0 < record["upstream_ms"] <= record["duration_ms"]

    # None of the key, secret or cookie anywhere in the record.
    text = json.dumps(record)
    assert key.key not in text
    assert key.key.split("_")[3][:16] not in text
    assert "c00kie" not in text


async def test_a_binary_body_is_base64(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = bytes(range(256)) * 8
    sent = await send(
        proxy,
        "PUT",
        "/v1/orders/blob",
        key=key.key,
        data=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert sent.status == 200
    record = await the_record(redis_client, sent.request_id)
    request = record["request"]
    assert request["body_encoding"] == "base64"
    assert base64.b64decode(request["raw_body"], validate=True) == body
    assert request["mapped_body"] == request["raw_body"]
    assert request["body_truncated"] is False
    assert request["body_bytes"] == len(body)
    assert upstream.seen[-1].body == body


async def test_a_body_over_the_capture_limit_is_truncated_in_the_record_only(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = (LETTERS * 1000)[:10_000].encode()
    sent = await send(
        proxy,
        "POST",
        "/v1/orders/big",
        key=key.key,
        data=body,
        headers={"Content-Type": "text/plain"},
    )
    assert sent.status == 200
    assert upstream.seen[-1].body == body  # the upstream got all of it
    record = await the_record(redis_client, sent.request_id)
    request = record["request"]
    assert request["raw_body"] == body[:CAPTURE].decode()
    assert request["mapped_body"] == request["raw_body"]
    assert request["body_encoding"] == "utf-8"
    assert request["body_truncated"] is True
    assert request["body_bytes"] == len(body)

    response = record["response"]  # the echo is bigger still
    assert len(sent.body) > CAPTURE
    assert response["body"] == sent.body[:CAPTURE].decode()
    assert response["body_truncated"] is True
    assert response["body_bytes"] == len(sent.body)


async def test_a_public_route_is_audited_without_a_key(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    sent = await send(proxy, "GET", "/public/cookie", headers={"Cookie": "a=b"})
    assert sent.status == 200
    assert "Set-Cookie" in sent.headers  # the client gets it; the record must not
    record = await the_record(redis_client, sent.request_id)
    assert record["method"] == "GET"
    assert record["path"] == "/public/cookie"
    assert record["query"] == ""
    assert record["key_name"] is None
    assert record["key_id"] is None
    assert record["scopes"] == []
    assert record["request"]["raw_body"] == ""
    assert record["request"]["mapped_body"] == ""
    assert record["request"]["body_bytes"] == 0
    assert record["request"]["body_truncated"] is False
    assert record["response"]["status"] == 200
    assert record["response"]["body"] == "cookie"
    assert "set-cookie" not in record["response"]["headers"]
    assert "s3cr3t" not in json.dumps(record)
    assert isinstance(record["upstream_ms"], float)


async def test_concurrent_requests_get_one_record_each(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis
) -> None:
    written_before = await audit_metric(proxy, "written")
    paths = [f"/v1/orders/{n}" if n % 2 else f"/public/{n}" for n in range(100)]
    sent = await asyncio.gather(
        *(send(proxy, "GET", path, key=key.key if path.startswith("/v1") else None)
          for path in paths)
    )  # fmt: skip
    assert [s.status for s in sent] == [200] * 100
    ids = [s.request_id for s in sent]
    await records_for(redis_client, ids)
    counts = Counter(record["request_id"] for record in await audit_records(redis_client))
    assert counts == Counter(ids)
    by_id = {record["request_id"]: record for record in await audit_records(redis_client)}
    for one, path in zip(sent, paths, strict=True):
        assert by_id[one.request_id]["path"] == path
    assert await audit_metric(proxy, "written") >= written_before + 100


async def test_a_forwarded_request_whose_client_went_away_is_still_audited(
    proxy: Proxy,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    """SPEC §2.9: nothing reaches the upstream unaudited, even when the client hangs up while
    the upstream is still working on its request."""
    request_id = f"gone-{uuid.uuid4().hex}"
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.server.proxy_port, ssl=client_ssl, server_hostname="localhost"
    )
    head = f"GET /public/wait HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: {request_id}\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    await asyncio.wait_for(upstream.entered.wait(), 5)  # the upstream has the request
    writer.close()  # the client goes away before the answer
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    del reader
    upstream.release.set()
    assert [seen.path for seen in upstream.seen] == ["/public/wait"]

    # Records are written in order: once this later one is in, the earlier one would be too.
    later = await send(proxy, "GET", "/public/later")
    await records_for(redis_client, [later.request_id])
    counts = Counter(record["request_id"] for record in await audit_records(redis_client))
    assert counts[request_id] == 1, "the upstream got a request the audit trail never saw"


# -- the data guard and route map -----------------------------------------------------------------


async def test_cards_and_passwords_are_masked_everywhere_and_the_map_applies(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    document = {
        "customer": {
            "name": "Ann",
            "mail": "ann@example.com",
            "ssn": "078-05-1120",
            "card": CARD,
            "password": PASSWORD,
        },
        "note": f"or pay with {OTHER_CARD}",
    }
    sent = await send(
        proxy,
        "POST",
        "/v1/customers",
        key=key.key,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert sent.status == 200
    forwarded = upstream.seen[-1].body.decode()
    assert holds_no_secret(forwarded)
    got = json.loads(forwarded)
    assert set(got["customer"]) == {"name", "email", "card", "password"}  # ssn dropped, renamed
    assert got["customer"]["email"] == "ann@example.com"
    assert got["customer"]["name"] == "Ann"
    assert got["customer"]["card"].endswith("1111")  # masked, last four kept

    record = await the_record(redis_client, sent.request_id)
    request = record["request"]
    assert holds_no_secret(request["raw_body"])
    assert holds_no_secret(request["mapped_body"])
    assert holds_no_secret(json.dumps(record))
    assert json.loads(request["mapped_body"]) == got  # as forwarded
    raw = json.loads(request["raw_body"])  # as received: the original structure, masked
    assert set(raw["customer"]) == {"name", "mail", "ssn", "card", "password"}
    assert raw["customer"]["ssn"] == "078-05-1120"
    assert raw["customer"]["mail"] == "ann@example.com"
    assert raw["customer"]["card"] == got["customer"]["card"]
    assert raw["customer"]["password"] == got["customer"]["password"] != PASSWORD
    assert request["body_bytes"] == len(json.dumps(document).encode())


async def test_reject_mode_refuses_with_422_and_an_event(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    proxy: Proxy = await start_proxy(
        keys=keys_section(), routes=ROUTES, data_guard={"card_numbers": "reject"}
    )
    key = await issue(redis_client, proxy.server.sidecar.settings, "billing", SCOPES)
    sent = await send(
        proxy,
        "POST",
        "/v1/orders/1",
        key=key.key,
        data=json.dumps({"card": CARD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert sent.status == 422
    assert sent.headers["Content-Type"].startswith("application/problem+json")
    problem = json.loads(sent.body)
    assert set(problem) == PROBLEM_FIELDS
    assert problem["status"] == 422
    assert problem["request_id"] == sent.request_id
    assert holds_no_secret(sent.body.decode())
    assert upstream.seen == []

    async def evented() -> bool:
        return await event_for(redis_client, sent.request_id) is not None

    await wait_until(evented, within=5)
    event = await event_for(redis_client, sent.request_id)
    assert event is not None
    assert event["event"] == "forbidden_data"
    assert event["key_name"] == "billing"
    assert holds_no_secret(json.dumps(event))
    # The request passed routing and authorization: it is audited, masked, as refused.
    record = await the_record(redis_client, sent.request_id)
    assert record["response"]["status"] == 422
    assert holds_no_secret(json.dumps(record))


async def test_a_textual_body_too_big_to_inspect_is_refused_a_binary_one_streams(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    size = INSPECT + 1000
    text = await send(
        proxy,
        "POST",
        "/v1/orders/1",
        key=key.key,
        data=(LETTERS * size)[:size].encode(),
        headers={"Content-Type": "application/json"},
    )
    assert text.status == 413
    assert upstream.seen == []

    blob = bytes(range(256)) * (size // 256 + 1)
    binary = await send(
        proxy,
        "POST",
        "/v1/orders/1",
        key=key.key,
        data=blob,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert binary.status == 200
    assert [seen.body for seen in upstream.seen] == [blob]

    found = await records_for(redis_client, [text.request_id, binary.request_id])
    assert [r["response"]["status"] for r in found[text.request_id]] == [413]
    (record,) = found[binary.request_id]
    assert record["request"]["body_bytes"] == len(blob)
    assert record["request"]["body_truncated"] is True
    assert base64.b64decode(record["request"]["raw_body"]) == blob[:CAPTURE]


async def test_refusals_before_forwarding_are_events_and_forwarded_requests_one_record_each(
    proxy: Proxy, key: Any, redis_client: aioredis.Redis
) -> None:
    forwarded = [await send(proxy, "GET", f"/v1/orders/{n}", key=key.key) for n in range(3)]
    assert [sent.status for sent in forwarded] == [200, 200, 200]
    refused = [
        await send(proxy, "GET", "/v1/orders/1"),  # no key: 401
        await send(proxy, "GET", "/v1/orders/1", key=key.key + "x"),  # malformed: 401
        await send(proxy, "GET", "/v1/admin/users", key=key.key),  # scope missing: 403
        await send(proxy, "GET", "/nowhere", key=key.key),  # no route: 403
    ]
    assert [sent.status for sent in refused] == [401, 401, 403, 403]
    # One more forwarded request after them: records are written in order, so once its record
    # is in, a record of any refusal would be too.
    last = await send(proxy, "GET", "/public/last")
    assert last.status == 200
    ids = [sent.request_id for sent in [*forwarded, last]]
    await records_for(redis_client, ids)

    counts = Counter(record["request_id"] for record in await audit_records(redis_client))
    assert counts == Counter(ids)  # exactly one each, nothing for the refusals

    async def all_evented() -> bool:
        events = [await event_for(redis_client, sent.request_id) for sent in refused]
        return all(event is not None for event in events)

    await wait_until(all_evented, within=5)
    names = [(await event_for(redis_client, sent.request_id) or {})["event"] for sent in refused]
    assert names == ["missing_key", "malformed_key", "missing_scope", "no_route"]


# -- Redis away: the spool ------------------------------------------------------------------------


async def test_records_made_while_redis_is_down_are_spooled_and_replayed_exactly_once(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    redis_outage: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    # A short cache TTL: during the outage the key is served by stale_if_error alone.
    proxy: Proxy = await start_proxy(
        keys=keys_section(cache_ttl_s=0.2, stale_if_error_s=300), routes=ROUTES
    )
    key = await issue(redis_client, proxy.server.sidecar.settings, "billing", SCOPES)
    warm = await send(proxy, "GET", "/v1/orders/warm", key=key.key)  # verified and cached
    assert warm.status == 200
    await records_for(redis_client, [warm.request_id])  # in Redis before it goes away
    spooled_before = await audit_metric(proxy, "spooled")

    redis_outage.stop()
    sent = [await send(proxy, "GET", f"/v1/orders/{n}", key=key.key) for n in range(30)]
    assert [s.status for s in sent] == [200] * 30, [s.body for s in sent if s.status != 200]

    async def all_on_disk() -> bool:
        return await audit_metric(proxy, "spooled") >= spooled_before + 30

    await wait_until(all_on_disk, within=10)
    assert list((tmp_path / "spool" / "audit").glob("*/*.spool"))
    assert metric_value(await metrics(proxy), "sidecar_audit_spool_bytes") > 0

    redis_outage.start()  # same port, no persistence: only what is replayed will be there
    fresh = aioredis.Redis.from_url(redis_outage.url)
    try:
        ids = [s.request_id for s in sent]
        await records_for(fresh, ids, within=15)
        counts = Counter(record["request_id"] for record in await audit_records(fresh))
    finally:
        await fresh.aclose()
    assert counts == Counter(ids)  # each exactly once, the pre-outage record gone with Redis
    assert await audit_metric(proxy, "replayed") >= 30

    async def spool_emptied() -> bool:
        return not list((tmp_path / "spool" / "audit").glob("*/*.spool"))

    await wait_until(spool_emptied, within=5)


async def test_a_full_spool_refuses_requests_before_they_reach_the_upstream(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    redis_outage: EmbeddedRedis,
    upstream: UpstreamServer,
) -> None:
    proxy: Proxy = await start_proxy(
        keys=keys_section(), routes=ROUTES, audit={"spool_max_bytes": 2048}
    )
    key = await issue(redis_client, proxy.server.sidecar.settings, "billing", SCOPES)
    warm = await send(proxy, "GET", "/v1/orders/warm", key=key.key)
    assert warm.status == 200
    await records_for(redis_client, [warm.request_id])

    redis_outage.stop()
    accepted: list[str] = []
    refused: Sent | None = None
    for n in range(100):
        before = len(upstream.seen)
        sent = await send(proxy, "GET", f"/v1/orders/{n}", key=key.key)
        if sent.status == 503:
            assert len(upstream.seen) == before, "a refused request reached the upstream"
            refused = sent
            break
        assert sent.status == 200, sent.body
        accepted.append(sent.request_id)
    else:
        pytest.fail("a 2 KiB spool kept taking records for 100 requests")
    assert accepted, "the spool took no record at all"
    problem = json.loads(refused.body)
    assert problem["status"] == 503
    assert "audit" in problem["detail"]
    assert int(refused.headers["Retry-After"]) >= 1

    async with proxy.session.get(proxy.health_url + "/readyz") as response:
        assert response.status == 503
        readiness = await response.json()
    assert "audit" in readiness["failing"]
    seen = len(upstream.seen)
    assert (await send(proxy, "GET", "/public/again")).status == 503  # still full
    assert len(upstream.seen) == seen

    # Redis back: every request that was let through has its record, once.
    redis_outage.start()
    fresh = aioredis.Redis.from_url(redis_outage.url)
    try:
        await records_for(fresh, accepted, within=15)
        counts = Counter(record["request_id"] for record in await audit_records(fresh))
        assert counts == Counter(accepted)

        async def ready_again() -> bool:
            async with proxy.session.get(proxy.health_url + "/readyz") as response:
                return response.status == 200

        await wait_until(ready_again, within=10)
        assert (await send(proxy, "GET", "/v1/orders/after", key=key.key)).status == 200
    finally:
        await fresh.aclose()


# -- encryption at rest ---------------------------------------------------------------------------


async def test_bodies_are_encrypted_in_redis_and_in_the_spool_and_the_cli_decrypts(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    redis_outage: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "audit.keys"
    keys_file.write_text(generate_key_line("k2026") + "\n", encoding="utf-8")
    keys_file.chmod(0o600)
    proxy: Proxy = await start_proxy(
        keys=keys_section(), routes=ROUTES, audit={"encryption_key_file": str(keys_file)}
    )
    key = await issue(redis_client, proxy.server.sidecar.settings, "billing", SCOPES)
    marker = f"MARKER-{uuid.uuid4().hex[:12]}"
    sent = await send(
        proxy,
        "POST",
        "/v1/orders/1",
        key=key.key,
        data=json.dumps({"note": marker}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert sent.status == 200
    assert marker in sent.body.decode()  # the upstream echoed it back, so both directions hold it
    (record,) = (await records_for(redis_client, [sent.request_id]))[sent.request_id]
    sealed = [record["path"], record["query"], record["response"]["body"]]
    sealed += [record["request"][name] for name in ("headers", "raw_body", "mapped_body")]
    sealed += [record["response"]["headers"]]
    for value in sealed:  # every content field (SPEC §17), bound to this record
        assert value.startswith("enc:v2:k2026:")
    entries: Any = await redis_client.xrange(AUDIT_STREAM)
    stored = b"".join(value for _id, fields in entries for value in fields.values())
    assert marker.encode() not in stored

    config = write_config(
        tmp_path / "cli.yaml",
        {
            "redis": {"url": redis_outage.url},
            "keys": keys_section(),
            "audit": {"encryption_key_file": str(keys_file)},
        },
    )
    tail = await sidecar_cli("audit", "tail", "--json", "--config", str(config))
    assert tail.returncode == 0, tail.stderr
    shown = [json.loads(line) for line in tail.stdout.splitlines()]
    (decrypted,) = [r for r in shown if r["request_id"] == sent.request_id]
    assert decrypted["path"] == "/v1/orders/1"
    assert json.loads(decrypted["request"]["raw_body"]) == {"note": marker}
    assert marker in decrypted["response"]["body"]

    # Redis away: what waits on disk is sealed the same way.
    redis_outage.stop()
    second = f"MARKER-{uuid.uuid4().hex[:12]}"
    spooled = await send(
        proxy,
        "POST",
        "/v1/orders/2",
        key=key.key,
        data=json.dumps({"note": second}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert spooled.status == 200
    spool = tmp_path / "spool" / "audit"

    async def on_disk() -> bool:
        data = b"".join(path.read_bytes() for path in spool.glob("*/*.spool"))
        return spooled.request_id.encode() in data

    await wait_until(on_disk, within=10)
    data = b"".join(path.read_bytes() for path in spool.glob("*/*.spool"))
    assert second.encode() not in data
    assert b"enc:v2:k2026:" in data


# -- retention ------------------------------------------------------------------------------------


async def test_entries_older_than_the_retention_are_trimmed_at_start_up(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    now_ms = int(time.time() * 1000)
    too_old = f"{now_ms - 100 * 86_400_000}-0"  # retention_days defaults to 90
    kept = f"{now_ms - 80 * 86_400_000}-0"
    streams = {AUDIT_STREAM: "record", EVENTS_STREAM: "event"}
    fresh: dict[str, Any] = {}
    for stream, field in streams.items():
        await redis_client.xadd(stream, {field: "{}"}, id=too_old)
        await redis_client.xadd(stream, {field: "{}"}, id=kept)
        fresh[stream] = await redis_client.xadd(stream, {field: "{}"})

    await start_proxy(routes=ROUTES)

    async def trimmed() -> bool:
        for stream in streams:
            if await redis_client.xrange(stream, min=too_old, max=too_old):
                return False
        return True

    await wait_until(trimmed, within=5)
    for stream in streams:
        entries: Any = await redis_client.xrange(stream)
        assert [entry_id for entry_id, _fields in entries] == [kept.encode(), fresh[stream]]
