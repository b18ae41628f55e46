"""The admin API's stream lists (events, audit) over real TLS on loopback with a real Redis:
paging exactly once while new entries arrive, bodies left out, bad filters answered 400
naming the parameter.

Until the admin server (helper A's `create_admin_app`) is on this branch, the handlers are
mounted on a minimal app here: the same handlers and parameter declarations, a stand-in
for the context, and the one error table (`problem_response`)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from sidecar.admin.api import audit, events
from sidecar.config import Settings
from sidecar.errors import Rejected
from sidecar.proxy.problems import problem_response
from tests.conftest import SettingsFactory

EVENTS_STREAM = "sidecar:auth-events"
AUDIT_STREAM = "sidecar:audit"


@dataclass
class StandInContext:
    """The fields of `AdminContext` the reading handlers use."""

    settings: Settings
    redis: aioredis.Redis
    cipher: None = None
    archive_url: str | None = None


@dataclass
class Admin:
    session: aiohttp.ClientSession
    url: str

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path, params=params) as response:
            return response.status, json.loads(await response.read())


def bound(handler: Any, context: StandInContext) -> Any:
    async def serve(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request, context)
        return response

    return serve


@pytest.fixture
async def admin(
    make_settings: SettingsFactory,
    redis_client: aioredis.Redis,
    cert_files: Any,
    client_ssl: ssl.SSLContext,
) -> AsyncIterator[Admin]:
    context = StandInContext(make_settings(), redis_client)

    @web.middleware
    async def problems(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except Rejected as exc:
            return problem_response(exc, "test")
        return response

    app = web.Application(middlewares=[problems])
    for path, handler in (
        ("/admin/v1/events", events.list_events),
        ("/admin/v1/audit", audit.list_audit),
        ("/admin/v1/audit/{request_id}", audit.get_audit),
    ):
        app.router.add_get(path, bound(handler, context))
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(*cert_files)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl))
    try:
        yield Admin(session, f"https://localhost:{port}")
    finally:
        await session.close()
        await runner.cleanup()


async def add_event(redis: aioredis.Redis, n: int, event: str = "unknown_key") -> None:
    document = {"ts": "2030-01-01T00:00:00+00:00", "event": event, "n": n, "client_ip": "127.0.0.1"}
    await redis.xadd(EVENTS_STREAM, {"event": json.dumps(document)})


async def test_paging_returns_every_event_exactly_once_while_new_ones_arrive(
    admin: Admin, redis_client: aioredis.Redis
) -> None:
    for n in range(120):
        await add_event(redis_client, n)
    seen: list[int] = []
    cursor: str | None = None
    for page_number in range(100):  # bounded: 120 items at 7 a page is 18 pages
        params = {"limit": "7"} | ({"cursor": cursor} if cursor else {})
        status, body = await admin.get("/admin/v1/events", **params)
        assert status == 200, body
        seen += [item["n"] for item in body["items"]]
        await add_event(redis_client, 1000 + page_number)  # arrives while the client pages
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(119, -1, -1))
    status, body = await admin.get("/admin/v1/events", limit="500")
    assert [item["n"] for item in body["items"]][-120:] == list(range(119, -1, -1))
    assert all(item["n"] >= 1000 for item in body["items"][:-120])


async def test_the_event_filter_keeps_only_that_event(
    admin: Admin, redis_client: aioredis.Redis
) -> None:
    for n in range(6):
        await add_event(redis_client, n, "missing_key" if n % 2 else "rate_limited")
    status, body = await admin.get("/admin/v1/events", event="missing_key", until="1h")
    assert (status, body["items"]) == (200, [])  # their ts is in 2030, after `until`
    status, body = await admin.get("/admin/v1/events", event="missing_key")
    assert [item["n"] for item in body["items"]] == [5, 3, 1]


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/admin/v1/events", {"since": "yesterday"}, "since"),
        ("/admin/v1/events", {"until": "2027-01-31"}, "until"),
        ("/admin/v1/events", {"limit": "0"}, "limit"),
        ("/admin/v1/events", {"limit": "501"}, "limit"),
        ("/admin/v1/events", {"cursor": "not-a-cursor"}, "cursor"),
        ("/admin/v1/events", {"colour": "red"}, "'colour'"),
        ("/admin/v1/audit", {"status": "4x"}, "status"),
        ("/admin/v1/audit", {"method": "G3T"}, "method"),
        ("/admin/v1/audit", {"path_prefix": "v1"}, "path_prefix"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_the_parameter(
    admin: Admin, path: str, params: dict[str, str], parameter: str
) -> None:
    status, body = await admin.get(path, **params)
    assert status == 400
    assert body["detail"].startswith(f"{parameter}: ")


async def test_since_names_the_forms_it_takes(admin: Admin) -> None:
    status, body = await admin.get("/admin/v1/events", since="sk_live_not_a_time")
    assert (status, body["detail"]) == (400, "since: use 30m, 24h, 7d or an RFC 3339 time")


async def test_audit_lists_records_without_bodies_and_one_record_whole(
    admin: Admin, redis_client: aioredis.Redis
) -> None:
    for n, status in enumerate((200, 404, 503)):
        record = {
            "ts": "2030-01-01T00:00:00+00:00",
            "request_id": f"req-{n}",
            "method": "POST",
            "path": f"/v1/orders/{n}",
            "key_name": "orders",
            "request": {"headers": {}, "raw_body": "raw", "mapped_body": "mapped"},
            "response": {"status": status, "headers": {}, "body": "answer"},
        }
        await redis_client.xadd(AUDIT_STREAM, {"record": json.dumps(record)})
    status, body = await admin.get("/admin/v1/audit", status="4xx", key="orders")
    assert status == 200
    [item] = body["items"]
    assert item["request_id"] == "req-1"
    assert "raw_body" not in item["request"]
    assert "mapped_body" not in item["request"]
    assert "body" not in item["response"]
    status, body = await admin.get("/admin/v1/audit", path_prefix="/v1/orders/2")
    assert [item["request_id"] for item in body["items"]] == ["req-2"]
    status, whole = await admin.get("/admin/v1/audit/req-1")
    assert status == 200
    assert whole["request"]["raw_body"] == "raw"
    assert whole["response"]["body"] == "answer"
    status, missing = await admin.get("/admin/v1/audit/req-9")
    assert status == 404
    assert missing["status"] == 404
