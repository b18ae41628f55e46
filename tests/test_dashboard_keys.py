"""The Keys pages over real TLS: create shows the key once and it works on the proxy; a
`<script>` name is shown as text; revoke asks first, then the proxy refuses the key; a
`sidecar:read`-only session cannot create; every action is an admin event naming the
signed-in key."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from sidecar.keys.scopes import KEYS, READ
from tests.adminsupport import TEST_ACTOR, admin_events
from tests.conftest import ProxyFactory
from tests.dashboardsupport import Browser, Dashboard, csrf_of, start_dashboard
from tests.keysupport import bearer

_SHOWN = re.compile(r'id="new-key" readonly value="([^"]+)"')


@pytest.fixture
async def dashboard(start_proxy: ProxyFactory, client_ssl: ssl.SSLContext) -> Dashboard:
    return await start_dashboard(start_proxy, client_ssl)


@pytest.fixture
async def browser(dashboard: Dashboard) -> AsyncIterator[Browser]:
    client = dashboard.browser()
    yield client
    await client.session.close()


async def test_create_shows_the_key_once_and_revoke_asks_first(
    dashboard: Dashboard, browser: Browser, redis_client: aioredis.Redis
) -> None:
    await browser.sign_in(await dashboard.key("keys-ops", READ, KEYS))
    token = await browser.csrf("/keys")
    created = await browser.post(
        "/keys", {"csrf": token, "name": "keys-shop", "scopes": "orders:read"}
    )
    assert created.status == 200
    shown = _SHOWN.search(created.text)
    assert shown is not None
    key = shown.group(1)
    assert 'data-replace-url="/keys"' in created.text
    listing = await browser.get("/keys")
    assert key not in listing.text
    assert "keys-shop" in listing.text
    async with dashboard.proxy.request("GET", "/v1/orders/1", headers=bearer(key)) as answer:
        assert answer.status != 401
    confirm = await browser.get("/keys/keys-shop/revoke")
    assert confirm.status == 200
    assert "Revoke key keys-shop?" in confirm.text
    revoked = await browser.post("/keys/keys-shop/revoke", {"csrf": csrf_of(confirm.text)})
    assert revoked.status == 200
    async with dashboard.proxy.request("GET", "/v1/orders/1", headers=bearer(key)) as answer:
        assert answer.status == 401
    events = await admin_events(redis_client)
    mine = [e for e in events if e.get("target") == "keys-shop"]
    assert [e["action"] for e in mine] == ["key_created", "key_revoked"]
    assert all(e["actor"]["name"] == "keys-ops" for e in mine)
    assert all(key not in str(e) for e in events)


async def test_a_script_name_is_shown_as_text(dashboard: Dashboard, browser: Browser) -> None:
    await browser.sign_in(await dashboard.key("keys-escape", READ))
    evil = "<script>alert(1)</script>"
    # Key names cannot hold `<`, so the path of a refused request carries it to the pages.
    async with dashboard.proxy.request("GET", f"/v1/orders/{evil}") as answer:
        assert answer.status == 401
    page = await browser.get("/activity")
    assert evil not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_a_read_only_session_cannot_create_or_rotate(
    dashboard: Dashboard, browser: Browser
) -> None:
    await browser.sign_in(await dashboard.key("keys-reader", READ))
    await dashboard.lifecycle.create(
        "keys-target", ["orders:read"], expires_at=None, actor=TEST_ACTOR
    )
    token = await browser.csrf("/keys")
    page = await browser.get("/keys")
    assert 'action="/keys"' not in page.text  # no create form is offered
    refused = await browser.post("/keys", {"csrf": token, "name": "nope", "scopes": "a:b"})
    assert refused.status == 403
    assert (await browser.post("/keys/keys-target/rotate", {"csrf": token})).status == 403
    assert (await browser.get("/keys/keys-target")).status == 200
