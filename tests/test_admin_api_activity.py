"""`GET activity` on a running sidecar counts exactly the requests a test sent, per event; and
with the archive on, `GET audit` reads a record from PostgreSQL once Redis no longer has it.
Every answer is validated against the served OpenAPI document."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from sidecar.keys.scopes import AUDIT, READ
from tests.adminsupport import PREFIX, AdminSidecar, admin_sidecar, start_admin_sidecar
from tests.archivesupport import archived_request_ids
from tests.authsupport import call
from tests.conftest import ProxyFactory
from tests.helpers import wait_until

__all__ = ["admin_sidecar"]  # the fixture, imported for pytest to find

ACTIVITY = f"{PREFIX}/activity"


async def test_activity_totals_are_the_requests_sent_per_event(
    admin_sidecar: AdminSidecar,
) -> None:
    sidecar = admin_sidecar
    reader = await sidecar.key("reader", [READ])
    orders = await sidecar.key("orders", ["orders:read"])
    sent: dict[str, int] = {}
    for _ in range(4):
        assert (await call(sidecar.proxy, "/v1/orders/1", key=orders)).status == 200
    for _ in range(3):
        assert (await call(sidecar.proxy, "/v1/orders/1")).status == 401
    for _ in range(2):
        assert (await call(sidecar.proxy, "/v1/orders/1", key=orders, method="POST")).status == 403
    events = await sidecar.admin.get(f"{PREFIX}/events", reader)
    for item in events.body["items"]:
        sent[item["event"]] = sent.get(item["event"], 0) + 1
    assert sorted(sent.values()) == [2, 3]  # the two kinds of refusal, as the events name them
    expected = {"allowed": 4, "rejected": sent}
    answers: list[Any] = []

    async def counted() -> bool:  # the counters are flushed every second
        answers.append(await sidecar.admin.get(ACTIVITY, reader, range="1h"))
        return bool(answers[-1].body["totals"] == expected)

    await wait_until(counted, within=5)
    answer = answers[-1].body
    assert answer["bucket_s"] == 60
    assert len(answer["buckets"]) == 60
    assert sum(bucket["allowed"] for bucket in answer["buckets"]) == 4
    one_key = await sidecar.admin.get(ACTIVITY, reader, range="24h", key=orders_id(events))
    assert one_key.body["totals"]["allowed"] == 4
    assert one_key.body["totals"]["rejected"] == {
        event: n for event, n in sent.items() if n == 2
    }  # the 401s carried no key


def orders_id(events: Any) -> str:
    [key_id] = {item["key_id"] for item in events.body["items"] if "key_id" in item}
    return str(key_id)


async def test_audit_reads_a_record_from_the_archive_once_redis_has_dropped_it(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, archive_url: str
) -> None:
    sidecar = await start_admin_sidecar(start_proxy, redis_client, archive={"url": archive_url})
    auditor = await sidecar.key("auditor", [READ, AUDIT])
    orders = await sidecar.key("orders", ["orders:write"])
    sent = await call(sidecar.proxy, "/v1/orders/7", key=orders, method="POST", json={"n": 7})
    assert sent.status == 200

    async def archived() -> bool:
        return (await archived_request_ids(archive_url))[sent.request_id] == 1

    await wait_until(archived, within=10)
    stream = sidecar.proxy.server.sidecar.settings.audit.stream
    await redis_client.delete(stream)  # from here on only PostgreSQL has the record
    whole = await sidecar.admin.get(f"{PREFIX}/audit/{sent.request_id}", auditor)
    assert whole.status == 200
    assert whole.body["request_id"] == sent.request_id
    assert whole.body["path"] == "/v1/orders/7"
    listed = await sidecar.admin.get(f"{PREFIX}/audit", auditor, path_prefix="/v1/orders/7")
    assert [item["request_id"] for item in listed.body["items"]] == [sent.request_id]
    assert "raw_body" not in listed.body["items"][0]["request"]
