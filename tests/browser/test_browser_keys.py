"""The Keys pages in a real Chromium: a key created in the UI is shown once (a reload shows it
no more) and works on the proxy; revoked in the UI, after the confirmation, the proxy refuses
it within 1 s; a `<script>` key name is shown as text. Screenshots and axe on each page."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, expect

from tests.browser.support import (
    Dashboard,
    accessibility_violations,
    screenshots,
    sign_in,
    unique,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="package")

REFUSED_WITHIN_S = 1.0


async def create_key(page: Page, name: str, scopes: str) -> str:
    """Create a key through the form; the key as the page shows it, this once."""
    await page.goto("/keys")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Scopes (space or comma separated)").fill(scopes)
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("heading", name=f"Key {name}")).to_be_visible()
    return await page.locator("#new-key").input_value()


async def test_a_key_created_in_the_ui_is_shown_once_works_and_is_revoked_in_the_ui(
    browser: Browser, context: BrowserContext, page: Page, dashboard: Dashboard
) -> None:
    await sign_in(page, await dashboard.admin_key(unique("operator")))
    name = unique("orders-reader")
    key = await create_key(page, name, "orders:read")
    await expect(page.get_by_role("button", name="Copy")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()
    await expect(page.locator("#new-key")).to_have_count(0)
    still_shown = key in await page.content()
    assert not still_shown, "the key is still on the page after a reload"

    assert await dashboard.proxy_status("/v1/orders/1", key) == 200

    await page.get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    await screenshots(page, "key")
    key_page = page.url
    await page.get_by_role("link", name="Revoke…").click()
    await expect(page.get_by_role("heading", name=f"Revoke key {name}?")).to_be_visible()
    await screenshots(page, "revoke")
    assert await accessibility_violations(browser, context, page.url) == ""
    await page.get_by_role("button", name=f"Revoke {name}").click()
    await expect(page.get_by_role("heading", name=f"Key {name} revoked")).to_be_visible()

    async def refused() -> bool:
        return await dashboard.proxy_status("/v1/orders/1", key) == 401

    await wait_until(refused, within=REFUSED_WITHIN_S)
    assert await accessibility_violations(browser, context, key_page) == ""


async def test_a_script_key_name_is_shown_as_text(page: Page, dashboard: Dashboard) -> None:
    dialogs: list[str] = []

    async def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record)
    await sign_in(page, await dashboard.admin_key(unique("operator")))
    await page.goto("/keys")
    name = "<script>alert(1)</script>"
    # The form's own pattern would stop the browser sending it: the server is what is tested.
    await page.get_by_label("Name", exact=True).evaluate("e => e.removeAttribute('pattern')")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Scopes (space or comma separated)").fill("orders:read")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("main")).to_contain_text(name)
    assert await page.locator("main script").count() == 0
    assert dialogs == []


async def test_the_keys_page_screenshots_and_accessibility(
    browser: Browser, context: BrowserContext, page: Page, dashboard: Dashboard
) -> None:
    await dashboard.proxy_key(unique("billing"), "orders:read", "orders:write")
    await sign_in(page, await dashboard.admin_key(unique("operator")))
    await page.goto("/keys")
    await expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()
    await screenshots(page, "keys")
    assert await accessibility_violations(browser, context, dashboard.url + "/keys") == ""
