"""The accessibility check finds what it is there to find: a check that passed everything would
pass the dashboard too. The vendored axe-core is the file tests/vendor/README.md describes."""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.async_api import Browser

from tests.browser.support import AXE, axe_violations, describe

BAD = (
    '<html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
    '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><input type="text"></main></body></html>'
)
GOOD = (
    '<html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
    '<label>Name <input type="text"></label></main></body></html>'
)


@pytest.mark.asyncio(loop_scope="package")
async def test_axe_reports_an_image_without_alt_and_an_unlabelled_field(browser: Browser) -> None:
    context = await browser.new_context(bypass_csp=True)
    try:
        page = await context.new_page()
        await page.set_content(BAD)
        found = describe(await axe_violations(page))
        await page.set_content(GOOD)
        clean = describe(await axe_violations(page))
    finally:
        await context.close()
    assert "image-alt (critical)" in found
    assert "label (critical)" in found
    assert clean == ""


def test_the_vendored_axe_is_the_recorded_release() -> None:
    readme = (AXE.parent / "README.md").read_text(encoding="utf-8")
    recorded = re.search(r"`axe.min.js` sha256: `([0-9a-f]{64})`", readme)
    assert recorded is not None
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == recorded.group(1)
    version = re.search(r"\*\*(\d+\.\d+\.\d+)\*\*", readme)
    assert version is not None
    assert AXE.read_text(encoding="utf-8").startswith(f"/*! axe v{version.group(1)}")
    assert (AXE.parent / "axe-core.LICENSE").read_text().startswith("Mozilla Public License")
