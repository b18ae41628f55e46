"""The Audit log in a real Chromium: a POST made through the proxy is found in /audit by its
path, and its record's page shows the raw body, the mapped body and the response side by side
to a key holding `sidecar:audit`; to a `sidecar:read` key the same page shows no body.
Screenshots and axe on /audit and on the record's page."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from sidecar.keys.scopes import AUDIT, READ
from tests.browser.support import (
    WIDTHS,
    Dashboard,
    accessibility_violations,
    screenshots,
    sign_in,
    unique,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="package")

KEPT_WITHIN_S = 5.0  # the audit writers batch: a record is kept soon, not at once
TITLES = ("Raw body", "Mapped body", "Response body")


async def post_through_the_proxy(dashboard: Dashboard, path: str, body: dict[str, str]) -> str:
    """POST `body` as JSON to `path` through the proxy with an orders:write key; its request id."""
    key = await dashboard.proxy_key(unique("orders-writer"), "orders:write")
    request_id = f"t-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": request_id}
    async with dashboard.http.post(dashboard.proxy_url + path, json=body, headers=headers) as r:
        await r.read()
        assert r.status == 200
    return request_id


async def find_in_the_audit_log(page: Page, path: str, request_id: str) -> None:
    """Filter /audit by `path` (status 2xx) through the form until the record is listed."""

    async def listed() -> bool:
        await page.goto("/audit")
        await page.get_by_label("Path starts with").fill(path)
        await page.get_by_label("Status").fill("2xx")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(re.compile(r"[?&]path_prefix="))
        return await page.get_by_role("link", name=request_id, exact=True).count() == 1

    await wait_until(listed, within=KEPT_WITHIN_S, interval=0.2)


async def test_a_proxied_post_is_found_and_its_bodies_shown_only_with_the_audit_scope(
    browser: Browser, context: BrowserContext, page: Page, dashboard: Dashboard
) -> None:
    path = f"/v1/orders/{unique('audit')}"
    note = unique("note")  # in the body only: what a sidecar:read key must not see
    request_id = await post_through_the_proxy(dashboard, path, {"note": note})

    await sign_in(page, await dashboard.admin_key(unique("auditor"), READ, AUDIT))
    await find_in_the_audit_log(page, path, request_id)
    rows = page.locator("main table tbody tr")
    await expect(rows).to_have_count(1)  # the path is unique: the filter left this one
    await expect(rows).to_contain_text(f"POST {path}")
    await expect(rows).to_contain_text("200")
    await screenshots(page, "audit")
    assert await accessibility_violations(browser, context, page.url) == ""

    await page.get_by_role("link", name=request_id, exact=True).click()
    await expect(page.get_by_role("heading", name=f"Record {request_id}")).to_be_visible()
    sections = [page.get_by_role("region", name=title) for title in TITLES]
    raw, mapped, response = sections
    await expect(raw).to_contain_text(note)
    await expect(mapped).to_contain_text(note)
    await expect(response).to_contain_text("POST")  # the upstream's echo of the request
    await expect(response).to_contain_text(path)
    boxes = [await section.bounding_box() for section in sections]
    assert all(box is not None for box in boxes)
    tops = {round(box["y"]) for box in boxes if box}
    lefts = [box["x"] for box in boxes if box]
    assert len(tops) == 1, f"not side by side at {WIDTHS[0]} px: tops {tops}"
    assert lefts[0] < lefts[1] < lefts[2], f"not in order raw, mapped, response: {lefts}"
    await screenshots(page, "record")
    record_url = page.url
    assert await accessibility_violations(browser, context, record_url) == ""

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, await dashboard.admin_key(unique("reader"), READ))
    await page.goto(record_url)
    await expect(page.get_by_role("heading", name=f"Record {request_id}")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("Bodies are shown only to a key with scope")
    await expect(page.locator("main")).to_contain_text(f'"path": "{path}"')  # the metadata
    for title in TITLES:
        await expect(page.get_by_role("region", name=title)).to_have_count(0)
    await expect(page.locator("main")).not_to_contain_text(note)
