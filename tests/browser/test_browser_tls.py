"""The browser harness itself: Chromium reaches the sidecar over TLS by the certificate pin and
refuses any other certificate."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from playwright.async_api import Browser, Error, Page

from tests.browser.support import Dashboard

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_chromium_reaches_the_admin_listener_over_tls_by_the_pin(
    page: Page, dashboard: Dashboard
) -> None:
    response = await page.goto("/admin/v1/openapi.json")
    assert response is not None
    assert response.status == 200
    details = await response.security_details()
    assert details is not None
    assert details.get("protocol") in ("TLS 1.3", "TLS 1.2")


@pytest_asyncio.fixture(loop_scope="package")
async def stranger() -> AsyncIterator[str]:
    """An HTTPS server on loopback with a certificate from a CA of its own, not pinned."""
    leaf = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="not the sidecar")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_any_other_certificate_is_still_refused(browser: Browser, stranger: str) -> None:
    """The pin lets one public key through, not every error: this is what
    `ignore_https_errors=True` would have given away."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            await page.goto(stranger, timeout=10_000)
    finally:
        await context.close()
