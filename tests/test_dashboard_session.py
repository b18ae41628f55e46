"""The dashboard's sign-in, sessions and page security over real TLS on loopback: sign-in and
sign-out, CSRF refusals, the session cookie's attributes, the CSP, and a session that ends at
sign-out and as soon as its key is revoked."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from sidecar.keys.scopes import AUDIT, KEYS, READ
from tests.adminsupport import TEST_ACTOR, admin_events
from tests.conftest import ProxyFactory
from tests.dashboardsupport import Browser, Dashboard, csrf_of, start_dashboard


@pytest.fixture
async def dashboard(start_proxy: ProxyFactory, client_ssl: ssl.SSLContext) -> Dashboard:
    return await start_dashboard(start_proxy, client_ssl)


@pytest.fixture
async def browser(dashboard: Dashboard) -> AsyncIterator[Browser]:
    client = dashboard.browser()
    yield client
    await client.session.close()


async def test_sign_in_gives_a_strict_host_cookie_and_sign_out_ends_the_session(
    dashboard: Dashboard, browser: Browser, redis_client: aioredis.Redis
) -> None:
    assert (await browser.get("/activity")).status == 303  # signed out: to /login
    key = await dashboard.key("sess-ops", READ, KEYS, AUDIT)
    signed_in = await browser.sign_in(key)
    assert signed_in.status == 303
    assert signed_in.headers["Location"] == "/activity"
    cookie = next(c for c in signed_in.cookies if c.startswith("__Host-sidecar_session="))
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    assert key not in cookie
    page = await browser.get("/activity")
    assert page.status == 200
    assert "API key activity" in page.text
    assert key not in page.text
    assert (await browser.post("/logout", {"csrf": csrf_of(page.text)})).status == 303
    assert (await browser.get("/activity")).status == 303
    actions = [event["action"] for event in await admin_events(redis_client)]
    assert "signed_in" in actions


async def test_a_wrong_key_is_refused_and_not_shown_back(
    dashboard: Dashboard, browser: Browser
) -> None:
    proxy_key = await dashboard.key("sess-proxy", "orders:read")
    page = await browser.sign_in(proxy_key)
    assert page.status == 401
    assert proxy_key not in page.text
    assert "not an admin key" in page.text
    assert (await browser.get("/activity")).status == 303


async def test_forms_without_or_with_a_wrong_csrf_token_are_refused(
    dashboard: Dashboard, browser: Browser
) -> None:
    key = await dashboard.key("csrf-ops", READ, KEYS)
    form = await browser.get("/login")
    assert (await browser.post("/login", {"key": key})).status == 403
    assert (await browser.post("/login", {"key": key, "csrf": "x" * 43})).status == 403
    assert (await browser.post("/login", {"key": key, "csrf": csrf_of(form.text)})).status == 303
    assert (await browser.post("/logout", {})).status == 403
    assert (await browser.post("/logout", {"csrf": "wrong"})).status == 403
    assert (await browser.get("/activity")).status == 200  # still signed in


async def test_pages_forbid_framing_and_inline_script(
    dashboard: Dashboard, browser: Browser
) -> None:
    await browser.sign_in(await dashboard.key("csp-ops", READ))
    for path in ("/login", "/activity", "/static/dashboard.css", "/no-such-page"):
        page = await browser.get(path)
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert "Strict-Transport-Security" in page.headers
    html = (await browser.get("/activity")).text
    assert "<script>" not in html
    assert 'src="/static/dashboard.js"' in html


async def test_revoking_the_key_ends_its_session_within_a_second(
    dashboard: Dashboard, browser: Browser
) -> None:
    await browser.sign_in(await dashboard.key("revoke-ops", READ, KEYS))
    assert (await browser.get("/activity")).status == 200
    await dashboard.lifecycle.revoke("revoke-ops", actor=TEST_ACTOR)
    revoked_at = time.monotonic()
    page = await browser.get("/activity")
    assert page.status == 303
    assert page.headers["Location"] == "/login"
    assert time.monotonic() - revoked_at < 1.0
