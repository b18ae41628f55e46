"""What the browser tests share: the sidecar they drive, the certificate pin Chromium is
given, signing in, screenshots and the accessibility check."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.async_api import Browser, BrowserContext, Page, expect

from sidecar.keys.lifecycle import KeyLifecycle
from sidecar.keys.scopes import AUDIT, KEYS, READ
from tests.adminsupport import TEST_ACTOR

ROOT = Path(__file__).resolve().parents[2]
# Git-ignored: the images change on every run (timestamps, random key names). The README
# shows one committed copy, docs/dashboard-activity.png.
SCREENSHOTS = ROOT / os.environ.get("SIDECAR_SCREENSHOTS", "screenshots")
AXE = ROOT / "tests" / "vendor" / "axe.min.js"
WIDTHS = (1280, 390)  # a laptop and a phone (iPhone 12-15 CSS width)
HEIGHT = 800
BLOCKING_IMPACTS = ("serious", "critical")


def spki_pin(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in `cert_pem` (the leaf)."""
    leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@dataclass
class Dashboard:
    """The sidecar under test: its admin listener (the dashboard), its proxy port, and an
    HTTPS client that trusts its certificate for the requests a test makes itself."""

    url: str  # https://127.0.0.1:<admin port>
    proxy_url: str  # https://127.0.0.1:<proxy port>
    lifecycle: KeyLifecycle
    http: aiohttp.ClientSession
    issued: list[str] = field(default_factory=list)

    async def admin_key(self, name: str, *scopes: str) -> str:
        """A new admin key (all `sidecar:` scopes unless given), made as the CLI makes one."""
        new = await self.lifecycle.create(
            name, scopes or (READ, KEYS, AUDIT), expires_at=None, actor=TEST_ACTOR
        )
        self.issued.append(name)
        return new.key

    async def proxy_key(self, name: str, *scopes: str) -> str:
        """A new proxy key (not an admin key)."""
        new = await self.lifecycle.create(name, scopes, expires_at=None, actor=TEST_ACTOR)
        self.issued.append(name)
        return new.key

    async def proxy_status(self, path: str, key: str) -> int:
        """The status the proxy answers `GET path` with, presenting `key`."""
        headers = {"Authorization": f"Bearer {key}"}
        async with self.http.get(self.proxy_url + path, headers=headers) as response:
            await response.read()
            return response.status


async def sign_in(page: Page, key: str) -> None:
    """Sign in through the form, as an operator does: paste the key, submit."""
    await page.goto("/login")
    await page.get_by_label("Admin key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def screenshots(page: Page, name: str) -> list[Path]:
    """`screenshots/<name>-1280.png` and `-390.png` (the folder: `$SIDECAR_SCREENSHOTS` when
    set): the page as it is now, whole, at both widths. The names are the page's, never
    anything a test typed (keys least of all)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    original = page.viewport_size
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": HEIGHT})
        path = SCREENSHOTS / f"{name}-{width}.png"
        await page.screenshot(path=str(path), full_page=True, animations="disabled")
        saved.append(path)
    if original is not None:
        await page.set_viewport_size(original)
    return saved


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on `page` as it is now.

    The dashboard's CSP (`default-src 'self'`, no inline script) refuses the script Playwright
    injects; the page must come from a context opened with `bypass_csp=True` (see
    `accessibility_violations`), which is used for this check and nothing else.
    """
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => JSON.stringify(await axe.run(document))")
    violations: list[dict[str, Any]] = json.loads(result)["violations"]
    return [v for v in violations if v.get("impact") in BLOCKING_IMPACTS]


async def accessibility_violations(browser: Browser, signed_in: BrowserContext, url: str) -> str:
    """The serious/critical axe findings on the page at `url`, as one readable string ("" when
    none).

    Opened in a context of its own with `bypass_csp=True` (so axe can be injected) carrying
    the cookies of `signed_in`; every other test page keeps the CSP on.
    """
    context = await browser.new_context(
        bypass_csp=True,
        storage_state=await signed_in.storage_state(),
        viewport={"width": WIDTHS[0], "height": HEIGHT},
    )
    try:
        page = await context.new_page()
        await page.goto(url)
        found = await axe_violations(page)
    finally:
        await context.close()
    return describe(found)


def describe(violations: list[dict[str, Any]]) -> str:
    """axe violations as lines: rule, impact, what it asks for, and where."""
    lines = []
    for violation in violations:
        targets = [" ".join(map(str, node.get("target", []))) for node in violation["nodes"]]
        lines.append(
            f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets[:5]}"
        )
    return "\n".join(lines)


def unique(stem: str) -> str:
    """A name no other test of the package uses (they share one sidecar)."""
    return f"{stem}-{secrets.token_hex(4)}"


NOT_A_KEY = "not-a-key"  # what a client with a typo sends: refused as malformed_key
