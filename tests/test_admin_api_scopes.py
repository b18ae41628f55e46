"""SPEC §16 scope boundaries on a running sidecar's admin port: each endpoint demands the scope
its declaration states and nothing implies another (403 naming it), proxy keys and no key are
401, an admin key is 401 on the proxy port (event `admin_key_on_proxy`). Every answer is
validated against the served OpenAPI document."""

from __future__ import annotations

import pytest

from sidecar.keys.scopes import AUDIT, KEYS, READ
from tests.adminsupport import PREFIX, AdminSidecar, admin_sidecar
from tests.authsupport import call, expect_event

__all__ = ["admin_sidecar"]  # the fixture, imported for pytest to find

CHANGES = [
    ("POST", "/keys"),
    ("POST", "/keys/orders/rotate"),
    ("POST", "/keys/orders/revoke"),
    ("DELETE", "/keys/orders"),
]
READS = ["/keys", "/keys/orders", "/events", "/audit", "/activity", "/admin-events"]


async def test_a_read_key_cannot_change_keys_403_naming_the_scope(
    admin_sidecar: AdminSidecar,
) -> None:
    sidecar = admin_sidecar
    await sidecar.key("orders", ["orders:read"])
    reader = await sidecar.key("reader", [READ, AUDIT])
    for method, path in CHANGES:
        body = {"name": "x", "scopes": ["orders:read"]} if path == "/keys" else None
        answer = await sidecar.admin.call(method, PREFIX + path, reader, body=body)
        assert answer.status == 403, (method, path)
        assert KEYS in answer.body["detail"]
    listed = await sidecar.admin.get(f"{PREFIX}/keys/orders", reader)
    assert listed.status == 200
    assert listed.body["status"] == "active"  # untouched by the refusals


async def test_a_keys_key_cannot_read_without_sidecar_read(admin_sidecar: AdminSidecar) -> None:
    writer = await admin_sidecar.key("writer", [KEYS])
    for path in READS:
        answer = await admin_sidecar.admin.get(PREFIX + path, writer)
        assert answer.status == 403, path
        assert READ in answer.body["detail"]


async def test_one_audit_record_needs_sidecar_audit_and_the_list_has_no_bodies(
    admin_sidecar: AdminSidecar,
) -> None:
    sidecar = admin_sidecar
    orders = await sidecar.key("orders", ["orders:write"])
    sent = await call(sidecar.proxy, "/v1/orders/1", key=orders, method="POST", json={"n": 1})
    assert sent.status == 200
    reader = await sidecar.key("reader", [READ])
    auditor = await sidecar.key("auditor", [READ, AUDIT])
    path = f"{PREFIX}/audit/{sent.request_id}"
    refused = await sidecar.admin.get(path, reader)
    assert refused.status == 403
    assert AUDIT in refused.body["detail"]
    whole = await sidecar.admin.get(path, auditor)
    assert whole.status == 200
    assert whole.body["request_id"] == sent.request_id
    assert "raw_body" in whole.body["request"]
    listed = await sidecar.admin.get(f"{PREFIX}/audit", reader)
    [item] = [item for item in listed.body["items"] if item["request_id"] == sent.request_id]
    assert "raw_body" not in item["request"]
    assert "mapped_body" not in item["request"]
    assert "body" not in item.get("response", {})


@pytest.mark.parametrize("scopes", [["orders:read"], ["*"]])
async def test_a_proxy_key_is_401_on_the_admin_port(
    admin_sidecar: AdminSidecar, scopes: list[str]
) -> None:
    proxy_key = await admin_sidecar.key("orders", scopes)
    for path in READS:
        answer = await admin_sidecar.admin.get(PREFIX + path, proxy_key)
        assert answer.status == 401, path
    reader = await admin_sidecar.key("reader", [READ])
    events = await admin_sidecar.admin.get(f"{PREFIX}/admin-events", reader)
    failures = [e for e in events.body["items"] if e["action"] == "sign_in_failed"]
    assert len(failures) == len(READS)
    assert {e["detail"]["event"] for e in failures} == {"not_an_admin_key"}
    assert proxy_key not in str(events.body)


async def test_no_key_or_a_wrong_one_is_401_and_openapi_needs_none(
    admin_sidecar: AdminSidecar,
) -> None:
    assert (await admin_sidecar.admin.get(f"{PREFIX}/keys")).status == 401
    assert (await admin_sidecar.admin.get(f"{PREFIX}/keys", "not-a-key")).status == 401
    document = await admin_sidecar.admin.get(f"{PREFIX}/openapi.json")
    assert document.status == 200
    assert document.body["openapi"].startswith("3.1")
    assert "Strict-Transport-Security" in document.headers
    operations = {
        (method.upper(), path): operation.get("x-sidecar-scope")
        for path, methods in document.body["paths"].items()
        for method, operation in methods.items()
    }
    assert operations[("POST", f"{PREFIX}/keys")] == KEYS
    assert operations[("GET", f"{PREFIX}/audit/{{request_id}}")] == AUDIT
    assert operations[("GET", f"{PREFIX}/openapi.json")] is None


async def test_an_admin_key_is_401_on_the_proxy_port_with_its_event(
    admin_sidecar: AdminSidecar,
) -> None:
    admin_key = await admin_sidecar.key("operator", [READ, KEYS, "orders:read"])
    answer = await call(admin_sidecar.proxy, "/v1/orders/1", key=admin_key)
    assert answer.status == 401
    event = await expect_event(admin_sidecar.redis, answer.request_id, "admin_key_on_proxy")
    assert event["key_name"] == "operator"
    assert admin_key not in str(event)
