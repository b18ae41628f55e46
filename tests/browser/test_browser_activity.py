"""Signing in, the API key activity page in a real Chromium (live mode, the key filter,
escaping), a form without its CSRF token refused, and signing out."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, expect

from tests.browser.support import (
    NOT_A_KEY,
    Dashboard,
    accessibility_violations,
    screenshots,
    sign_in,
    unique,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

LIVE_WITHIN_MS = 5_000
SIGNED_OUT = re.compile(r"/login(\?|$)")  # where a page without a session sends the browser


async def signed_in(page: Page, dashboard: Dashboard) -> None:
    await sign_in(page, await dashboard.admin_key(unique("operator")))


async def test_a_rejected_request_appears_in_the_live_table(
    page: Page, dashboard: Dashboard
) -> None:
    await signed_in(page, dashboard)
    await page.goto("/activity")
    await page.get_by_label("Live (every second)").check()
    await expect(page.locator("#live-status")).to_contain_text("Live")
    path = f"/v1/orders/{unique('live')}"
    assert await dashboard.proxy_status(path, NOT_A_KEY) == 401
    row = page.locator("#events tbody tr", has_text=path)
    await expect(row).to_contain_text("malformed_key", timeout=LIVE_WITHIN_MS)


async def test_the_key_filter_shows_that_key_s_events_only(
    page: Page, dashboard: Dashboard
) -> None:
    reader, other = unique("reader"), unique("other")
    for name in (reader, other):
        key = await dashboard.proxy_key(name, "orders:read")
        assert await dashboard.proxy_status("/v1/admin/x", key) == 403  # scope missing
    await signed_in(page, dashboard)
    await page.goto("/activity")
    await page.get_by_label("Key (name or id)").fill(reader)
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(rf"[?&]key={reader}(&|$)"))
    table = page.locator("#events tbody")
    await expect(table).to_contain_text(reader)
    await expect(table).not_to_contain_text(other)
    await expect(table).not_to_contain_text(NOT_A_KEY)


async def test_markup_in_a_path_and_a_filter_is_shown_as_text(
    page: Page, dashboard: Dashboard
) -> None:
    dialogs: list[str] = []

    async def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record)
    marker = unique("xss")
    assert await dashboard.proxy_status(f"/v1/orders/<script>alert('{marker}')</script>", "") == 401
    await signed_in(page, dashboard)
    await page.goto("/activity")
    row = page.locator("#events tbody tr", has_text=marker)
    await expect(row).to_contain_text("<script>")
    script = "<script>alert(1)</script>"
    await page.get_by_label("Key (name or id)").fill(script)
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_label("Key (name or id)")).to_have_value(script)
    assert await page.locator("main script").count() == 0
    assert dialogs == []


async def test_a_form_posted_without_its_csrf_token_is_refused(
    page: Page, dashboard: Dashboard
) -> None:
    # Signing in: the pre-session form without its token does not sign anyone in.
    await page.goto("/login")
    await page.locator("form[action='/login'] input[name=csrf]").evaluate("e => e.remove()")
    await page.get_by_label("Admin key").fill(await dashboard.admin_key(unique("operator")))
    async with page.expect_response("**/login") as answer:
        await page.get_by_role("button", name="Sign in").click()
    assert (await answer.value).status == 403
    await page.goto("/activity")
    await expect(page).to_have_url(SIGNED_OUT)
    # Signing out: the session's form without its token leaves the session as it was.
    await signed_in(page, dashboard)
    await page.goto("/activity")
    await page.locator("form[action='/logout'] input[name=csrf]").evaluate("e => e.remove()")
    async with page.expect_response("**/logout") as answer:
        await page.get_by_role("button", name="Sign out").click()
    assert (await answer.value).status == 403
    await page.goto("/activity")
    await expect(page.get_by_role("heading", name="API key activity")).to_be_visible()


async def test_signing_out_ends_the_session_on_the_server(
    browser: Browser, context: BrowserContext, page: Page, dashboard: Dashboard
) -> None:
    await signed_in(page, dashboard)
    before = await context.storage_state()  # the session cookie, as a thief would keep it
    await page.goto("/activity")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(SIGNED_OUT)
    await page.goto("/activity")
    await expect(page).to_have_url(SIGNED_OUT)
    replay = await browser.new_context(base_url=dashboard.url, storage_state=before)
    try:
        old = await replay.new_page()
        await old.goto("/activity")
        await expect(old).to_have_url(SIGNED_OUT)
    finally:
        await replay.close()


async def test_the_sign_in_and_activity_pages_screenshots_and_accessibility(
    browser: Browser, context: BrowserContext, page: Page, dashboard: Dashboard
) -> None:
    await page.goto("/login")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await screenshots(page, "login")
    assert await accessibility_violations(browser, context, dashboard.url + "/login") == ""
    for _ in range(3):
        assert await dashboard.proxy_status("/v1/orders/42", NOT_A_KEY) == 401
    await signed_in(page, dashboard)
    await page.goto("/activity?range=1h")
    await expect(page.locator("#events tbody")).to_contain_text("malformed_key")
    await screenshots(page, "activity")
    assert await accessibility_violations(browser, context, dashboard.url + "/activity") == ""
