"""The browser tests' fixtures: one sidecar with its admin listener for the whole package (real
Redis, real TLS with the tests' trustme certificate, a real upstream), one headless Debian
Chromium driven by Playwright, and a fresh browser context and page per test.

Each page fails its test if it asks for anything from another origin (SPEC §16: no asset from
another origin; the request is refused, never sent) or if the browser reports a Content
Security Policy violation (SPEC §16: no inline script).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    async_playwright,
)

from sidecar.admin.context import CONTEXT
from sidecar.config import Settings
from sidecar.runtime.serve import running
from sidecar.runtime.tls import check_certificate
from sidecar.storage.embedded import EmbeddedRedis
from tests.authsupport import ROUTES
from tests.browser.chromium import (
    FAILED_LINE,
    MISSING,
    SKIPPED_LINE,
    find_chromium,
    launch_args,
    under_ci,
)
from tests.browser.support import HEIGHT, WIDTHS, Dashboard, spki_pin
from tests.keysupport import FAST_KEYS
from tests.upstream import start_upstream

HERE = Path(__file__).resolve().parent
TIMEOUT_MS = 5_000  # every Playwright action and `expect` waits at most this long
NAVIGATION_TIMEOUT_MS = 10_000
TEARDOWN_TIMEOUT_S = 15.0
browser_items = pytest.StashKey[int]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[browser_items] = sum(1 for item in items if HERE in item.path.parents)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The loud line: a run with browser tests collected and no Chromium to run them on."""
    if terminalreporter.config.stash.get(browser_items, 0) and find_chromium() is None:
        line = FAILED_LINE if under_ci() else SKIPPED_LINE
        terminalreporter.write_sep("!", line, red=True, bold=True)


@pytest.fixture(scope="package")
def chromium() -> Path:
    path = find_chromium()
    if path is None:
        if under_ci():
            pytest.fail(f"{MISSING}: under CI=true the browser tests must run", pytrace=False)
        pytest.skip(SKIPPED_LINE)
    return path


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def dashboard(
    chromium: Path,  # first: without a browser, no sidecar is started for nothing
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    client_ssl: ssl.SSLContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Dashboard]:
    """One sidecar, admin listener on, for every browser test (a sidecar per test would cost
    more than the tests); tests keep apart by the names of the keys they make."""
    if not redis_server.running:  # a fault test elsewhere may have stopped it
        redis_server.start()
    async with start_upstream() as upstream:
        settings = Settings(
            listen={"address": "127.0.0.1", "port": 0},
            health={"address": "127.0.0.1", "port": 0},
            admin={"enabled": True, "address": "127.0.0.1", "port": 0},
            tls={"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            upstream={"url": upstream.url, "timeout_s": 5},
            redis={"url": redis_server.url},
            audit={"spool_dir": str(tmp_path_factory.mktemp("browser-spool"))},
            shutdown={"drain_s": 0, "grace_s": 5},
            keys=FAST_KEYS,
            routes=ROUTES,
        )
        async with (
            running(settings, check_certificate(settings.tls)) as server,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl),
                timeout=aiohttp.ClientTimeout(total=10),
            ) as http,
        ):
            app = server.sidecar.admin_app
            assert app is not None
            assert server.admin_port is not None
            yield Dashboard(
                url=f"https://127.0.0.1:{server.admin_port}",
                proxy_url=f"https://127.0.0.1:{server.proxy_port}",
                lifecycle=app[CONTEXT].lifecycle,
                http=http,
            )


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser(chromium: Path, cert_files: tuple[Path, Path]) -> AsyncIterator[Browser]:
    """Headless Chromium that accepts the sidecar's certificate and no other bad one."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=launch_args(spki_pin(cert_files[0].read_bytes())),
            timeout=30_000,
        )
        try:
            yield browser
        finally:
            await browser.close()


class Offences:
    """What a page did that the dashboard must never make it do."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.foreign: list[str] = []
        self.csp: list[str] = []

    async def route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/"):
            await route.continue_()
        else:
            self.foreign.append(url)
            await route.abort("blockedbyclient")

    def console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp.append(message.text)


@pytest_asyncio.fixture(loop_scope="package")
async def context(browser: Browser, dashboard: Dashboard) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        base_url=dashboard.url,
        viewport={"width": WIDTHS[0], "height": HEIGHT},
        # The dashboard's pages are tested with their CSP in force (only the axe run lifts it).
        bypass_csp=False,
        ignore_https_errors=False,
    )
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    try:
        yield context
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="package")
async def page(context: BrowserContext, dashboard: Dashboard) -> AsyncIterator[Page]:
    """A fresh page (its own cookies); the test fails if the page asked another origin for
    anything or broke its Content Security Policy."""
    offences = Offences(dashboard.url)
    await context.route("**/*", offences.route)
    page = await context.new_page()
    page.on("console", offences.console)
    yield page
    assert offences.foreign == [], f"requests to another origin: {offences.foreign}"
    assert offences.csp == [], f"CSP violations: {offences.csp}"
