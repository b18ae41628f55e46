"""The admin API's stream lists (events, audit, admin events) on a running sidecar's admin port,
over entries the proxy itself wrote: paging exactly once while new entries arrive, the filters,
and bad filters answered 400 naming the parameter. Every answer is validated against the served
OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.keys.scopes import AUDIT, KEYS, READ
from tests.adminsupport import PREFIX, AdminSidecar, admin_sidecar
from tests.authsupport import call
from tests.helpers import wait_until

__all__ = ["admin_sidecar"]  # the fixture, imported for pytest to find

EVENTS = f"{PREFIX}/events"
AUDIT_LIST = f"{PREFIX}/audit"
PAGES = 100  # bounds every paging loop: 60 items at 7 a page are 9 pages


async def refused(sidecar: AdminSidecar, n: int) -> str:
    """One request without a key (a `missing_key` event); its request id."""
    answer = await call(sidecar.proxy, f"/v1/orders/{n}")
    assert answer.status == 401
    return answer.request_id


async def listed_ids(sidecar: AdminSidecar, key: str, path: str, /, **params: str) -> list[str]:
    answer = await sidecar.admin.get(path, key, **params)
    assert answer.status == 200, answer.body
    return [item["request_id"] for item in answer.body["items"]]


async def wait_listed(sidecar: AdminSidecar, key: str, path: str, ids: list[str]) -> None:
    """Until the newest entries are `ids` (the writers batch: kept soon, not at once)."""

    async def kept() -> bool:
        newest = await listed_ids(sidecar, key, path, limit="500")
        return newest[: len(ids)] == ids

    await wait_until(kept, within=5)


async def test_paging_returns_every_event_exactly_once_while_new_ones_arrive(
    admin_sidecar: AdminSidecar,
) -> None:
    sidecar = admin_sidecar
    reader = await sidecar.key("reader", [READ])
    sent = [await refused(sidecar, n) for n in range(60)]
    await wait_listed(sidecar, reader, EVENTS, sent[::-1])
    seen: list[str] = []
    cursor: str | None = None
    for page_number in range(PAGES):
        params = {"limit": "7"} | ({"cursor": cursor} if cursor else {})
        answer = await sidecar.admin.get(EVENTS, reader, **params)
        assert answer.status == 200, answer.body
        seen += [item["request_id"] for item in answer.body["items"]]
        await refused(sidecar, 1000 + page_number)  # arrives while the client pages
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert seen == sent[::-1]


async def test_the_event_filters_keep_only_their_events(admin_sidecar: AdminSidecar) -> None:
    sidecar = admin_sidecar
    reader = await sidecar.key("reader", [READ])
    orders = await sidecar.key("orders", ["orders:read"])
    missing = await refused(sidecar, 1)
    wrong_scope = await call(sidecar.proxy, "/v1/orders/1", key=orders, method="POST")
    assert wrong_scope.status == 403
    await wait_listed(sidecar, reader, EVENTS, [wrong_scope.request_id, missing])
    assert await listed_ids(sidecar, reader, EVENTS, event="missing_key") == [missing]
    assert await listed_ids(sidecar, reader, EVENTS, key="orders") == [wrong_scope.request_id]
    assert await listed_ids(sidecar, reader, EVENTS, ip="127.0.0.1", limit="1") == [
        wrong_scope.request_id
    ]
    assert await listed_ids(sidecar, reader, EVENTS, since="1h") == [
        wrong_scope.request_id,
        missing,
    ]
    assert await listed_ids(sidecar, reader, EVENTS, until="2000-01-01T00:00:00Z") == []


async def test_the_audit_filters_and_one_record_whole(admin_sidecar: AdminSidecar) -> None:
    sidecar = admin_sidecar
    auditor = await sidecar.key("auditor", [READ, AUDIT])
    orders = await sidecar.key("orders", ["orders:read", "orders:write"])
    got = await call(sidecar.proxy, "/v1/orders/1", key=orders)
    posted = await call(sidecar.proxy, "/v1/orders/2", key=orders, method="POST", json={"n": 2})
    assert (got.status, posted.status) == (200, 200)
    await wait_listed(sidecar, auditor, AUDIT_LIST, [posted.request_id, got.request_id])
    assert await listed_ids(sidecar, auditor, AUDIT_LIST, method="POST") == [posted.request_id]
    assert await listed_ids(sidecar, auditor, AUDIT_LIST, path_prefix="/v1/orders/1") == [
        got.request_id
    ]
    assert await listed_ids(sidecar, auditor, AUDIT_LIST, status="2xx", key="orders") == [
        posted.request_id,
        got.request_id,
    ]
    assert await listed_ids(sidecar, auditor, AUDIT_LIST, status="404") == []
    whole = await sidecar.admin.get(f"{AUDIT_LIST}/{posted.request_id}", auditor)
    assert whole.status == 200
    assert whole.body["method"] == "POST"
    assert "raw_body" in whole.body["request"]
    missing = await sidecar.admin.get(f"{AUDIT_LIST}/no-such-request", auditor)
    assert missing.status == 404


async def test_admin_events_filter_by_action_actor_and_target(admin_sidecar: AdminSidecar) -> None:
    sidecar = admin_sidecar
    operator = await sidecar.key("operator", [READ, KEYS])
    for name in ("a", "b"):
        body = {"name": name, "scopes": ["orders:read"]}
        assert (
            await sidecar.admin.call("POST", f"{PREFIX}/keys", operator, body=body)
        ).status == 201
    assert (await sidecar.admin.call("POST", f"{PREFIX}/keys/a/revoke", operator)).status == 200
    path = f"{PREFIX}/admin-events"

    async def targets(**params: str) -> list[tuple[str, str]]:
        answer = await sidecar.admin.get(path, operator, **params)
        assert answer.status == 200
        return [(item["action"], item["target"]) for item in answer.body["items"]]

    assert await targets(action="key_created") == [("key_created", "b"), ("key_created", "a")]
    assert await targets(target="a") == [("key_revoked", "a"), ("key_created", "a")]
    assert len(await targets(actor="operator")) == 3
    assert await targets(actor="someone-else") == []


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        (EVENTS, {"since": "yesterday"}, "since"),
        (EVENTS, {"until": "2027-01-31"}, "until"),
        (EVENTS, {"limit": "0"}, "limit"),
        (EVENTS, {"limit": "501"}, "limit"),
        (EVENTS, {"cursor": "not-a-cursor"}, "cursor"),
        (EVENTS, {"colour": "red"}, "'colour'"),
        (AUDIT_LIST, {"status": "4x"}, "status"),
        (AUDIT_LIST, {"method": "G3T"}, "method"),
        (AUDIT_LIST, {"path_prefix": "v1"}, "path_prefix"),
        (f"{PREFIX}/activity", {"range": "2h"}, "range"),
        (f"{PREFIX}/admin-events", {"limit": "x"}, "limit"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_the_parameter(
    admin_sidecar: AdminSidecar, path: str, params: dict[str, Any], parameter: str
) -> None:
    reader = await admin_sidecar.key("reader", [READ])
    answer = await admin_sidecar.admin.get(path, reader, **params)
    assert answer.status == 400
    assert answer.body["detail"].startswith(f"{parameter}: ")


async def test_since_names_the_forms_it_takes_never_the_value(
    admin_sidecar: AdminSidecar,
) -> None:
    reader = await admin_sidecar.key("reader", [READ])
    answer = await admin_sidecar.admin.get(EVENTS, reader, since="<b>last tuesday</b>")
    assert answer.status == 400
    assert answer.body["detail"] == "since: use 30m, 24h, 7d or an RFC 3339 time"
    # A key pasted there is refused before any parameter is read (a key in the URL), unechoed.
    answer = await admin_sidecar.admin.get(EVENTS, reader, since=reader)
    assert answer.status == 400
    assert reader not in str(answer.body)
