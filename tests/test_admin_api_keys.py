"""SPEC §16 keys endpoints on a running sidecar's admin port (real TLS, real Redis): a key made
by `POST keys` works on the proxy within 1 s, one revoked by the API is refused there within
1 s; rotation, deletion, the 400/404/409 answers, and each change as an admin event naming the
calling key. Every answer is validated against the served OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.keys.scopes import KEYS, READ
from tests.adminsupport import PREFIX, AdminSidecar, admin_sidecar
from tests.authsupport import call
from tests.conftest import Proxy
from tests.helpers import wait_until

__all__ = ["admin_sidecar"]  # the fixture, imported for pytest to find

ORDERS = "/v1/orders/1"


@pytest.fixture
async def sidecar(admin_sidecar: AdminSidecar) -> AdminSidecar:
    return admin_sidecar


async def proxy_status_becomes(proxy: Proxy, key: str, status: int, *, within: float) -> None:
    async def answered() -> bool:
        return (await call(proxy, ORDERS, key=key)).status == status

    await wait_until(answered, within=within)


async def admin_actions(sidecar: AdminSidecar, key: str) -> list[dict[str, Any]]:
    answer = await sidecar.admin.get(f"{PREFIX}/admin-events", key)
    assert answer.status == 200
    items: list[dict[str, Any]] = answer.body["items"]
    return items


async def test_a_key_made_by_the_api_works_on_the_proxy_and_revoked_is_refused_within_1s(
    sidecar: AdminSidecar,
) -> None:
    operator = await sidecar.key("operator", [READ, KEYS])
    made = await sidecar.admin.call(
        "POST", f"{PREFIX}/keys", operator, body={"name": "orders", "scopes": ["orders:read"]}
    )
    assert made.status == 201
    assert made.body["name"] == "orders"
    await proxy_status_becomes(sidecar.proxy, made.body["key"], 200, within=1)

    revoked = await sidecar.admin.call("POST", f"{PREFIX}/keys/orders/revoke", operator)
    assert revoked.status == 200
    assert revoked.body["revoked"] == [made.body["id"]]
    await proxy_status_becomes(sidecar.proxy, made.body["key"], 401, within=1)

    listed = await sidecar.admin.get(f"{PREFIX}/keys/orders", operator)
    assert listed.body["status"] == "revoked"
    assert "key" not in listed.body  # shown once, in the 201
    actions = await admin_actions(sidecar, operator)
    assert [(a["action"], a["target"]) for a in actions[:2]] == [
        ("key_revoked", "orders"),
        ("key_created", "orders"),
    ]
    assert {a["actor"]["name"] for a in actions[:2]} == {"operator"}


async def test_rotate_issues_a_successor_and_the_old_key_works_through_its_grace(
    sidecar: AdminSidecar,
) -> None:
    operator = await sidecar.key("operator", [READ, KEYS])
    made = await sidecar.admin.call(
        "POST", f"{PREFIX}/keys", operator, body={"name": "orders", "scopes": ["orders:read"]}
    )
    rotated = await sidecar.admin.call(
        "POST", f"{PREFIX}/keys/orders/rotate", operator, body={"grace": "1h"}
    )
    assert rotated.status == 201
    assert rotated.body["rotated_from"] == made.body["id"]
    assert rotated.body["key"] != made.body["key"]
    await proxy_status_becomes(sidecar.proxy, rotated.body["key"], 200, within=1)
    assert (await call(sidecar.proxy, ORDERS, key=made.body["key"])).status == 200  # in grace
    current = await sidecar.admin.get(f"{PREFIX}/keys/orders", operator)
    assert current.body["id"] == rotated.body["id"]
    listed = await sidecar.admin.get(f"{PREFIX}/keys", operator)
    assert sorted(item["id"] for item in listed.body["items"] if item["name"] == "orders") == (
        sorted([made.body["id"], rotated.body["id"]])
    )
    assert listed.body["next_cursor"] is None

    deleted = await sidecar.admin.call("DELETE", f"{PREFIX}/keys/orders", operator)
    assert deleted.status == 204
    await proxy_status_becomes(sidecar.proxy, rotated.body["key"], 401, within=1)
    assert (await sidecar.admin.get(f"{PREFIX}/keys/orders", operator)).status == 404
    actions = [a["action"] for a in await admin_actions(sidecar, operator)]
    assert actions[:3] == ["key_deleted", "key_rotated", "key_created"]


async def test_a_taken_name_is_409_and_a_missing_one_404(sidecar: AdminSidecar) -> None:
    operator = await sidecar.key("operator", [READ, KEYS])
    body = {"name": "orders", "scopes": ["orders:read"]}
    assert (await sidecar.admin.call("POST", f"{PREFIX}/keys", operator, body=body)).status == 201
    again = await sidecar.admin.call("POST", f"{PREFIX}/keys", operator, body=body)
    assert again.status == 409
    for method, path in [
        ("GET", "/keys/nobody"),
        ("POST", "/keys/nobody/rotate"),
        ("POST", "/keys/nobody/revoke"),
        ("DELETE", "/keys/nobody"),
    ]:
        answer = await sidecar.admin.call(method, PREFIX + path, operator)
        assert answer.status == 404, (method, path)
    revoked = await sidecar.admin.call("POST", f"{PREFIX}/keys/orders/revoke", operator)
    assert revoked.status == 200
    rotate_revoked = await sidecar.admin.call("POST", f"{PREFIX}/keys/orders/rotate", operator)
    assert rotate_revoked.status == 409


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"scopes": ["orders:read"]}, "name"),
        ({"name": "bad name!", "scopes": ["orders:read"]}, "name"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["sidecar:everything"]}, "scopes"),
        ({"name": "x", "scopes": ["orders:read"], "expires": "soon"}, "expires"),
        ({"name": "x", "scopes": ["orders:read"], "allow_ips": ["10.0.0.300"]}, "allow_ips"),
        ({"name": "x", "scopes": ["orders:read"], "expire": "30d"}, "'expire'"),
        ([1, 2], "body"),
    ],
)
async def test_a_bad_create_body_is_a_400_naming_the_field(
    sidecar: AdminSidecar, body: Any, parameter: str
) -> None:
    operator = await sidecar.key("operator", [KEYS])
    answer = await sidecar.admin.call("POST", f"{PREFIX}/keys", operator, body=body)
    assert answer.status == 400
    assert answer.body["detail"].startswith(f"{parameter}: ")


async def test_a_key_pasted_into_a_field_is_not_echoed(sidecar: AdminSidecar) -> None:
    operator = await sidecar.key("operator", [KEYS])
    secret = await sidecar.key("victim", ["orders:read"])
    for body in (
        {"name": secret, "scopes": ["orders:read"]},
        {"name": "x", "scopes": [secret]},
        {"name": "x", "scopes": ["orders:read"], "expires": secret},
        {secret: 1},
    ):
        answer = await sidecar.admin.call("POST", f"{PREFIX}/keys", operator, body=body)
        assert answer.status == 400
        assert secret not in answer.body["detail"]
