"""Helpers for the dashboard's HTTP-level tests: a browser-like client (its own cookie jar,
real TLS to the sidecar's admin port on loopback) that signs in with a pasted key and reads
the CSRF token out of the page it was given, as a browser's form would send it."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from sidecar.admin.context import CONTEXT
from sidecar.keys.lifecycle import KeyLifecycle
from tests.adminsupport import TEST_ACTOR
from tests.conftest import Proxy, ProxyFactory
from tests.keysupport import FAST_KEYS

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in `html`."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]
    cookies: list[str]  # the Set-Cookie header lines


class Browser:
    """One browser: a cookie jar and the admin port's URL."""

    def __init__(self, url: str, client_ssl: ssl.SSLContext) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl),
            timeout=aiohttp.ClientTimeout(total=10),
        )

    async def get(self, path: str) -> Page:
        return await self._call("GET", path)

    async def post(self, path: str, form: dict[str, str]) -> Page:
        return await self._call("POST", path, data=form)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Page:
        async with self.session.request(
            method, self.url + path, allow_redirects=False, **kwargs
        ) as response:
            return Page(
                response.status,
                await response.text(),
                dict(response.headers),
                response.headers.getall("Set-Cookie", []),
            )

    async def sign_in(self, key: str) -> Page:
        form = await self.get("/login")
        assert form.status == 200
        return await self.post("/login", {"csrf": csrf_of(form.text), "key": key})

    async def csrf(self, path: str = "/activity") -> str:
        page = await self.get(path)
        assert page.status == 200, page.status
        return csrf_of(page.text)


@dataclass
class Dashboard:
    proxy: Proxy
    url: str
    lifecycle: KeyLifecycle
    client_ssl: ssl.SSLContext

    def browser(self) -> Browser:
        return Browser(self.url, self.client_ssl)

    async def key(self, name: str, *scopes: str) -> str:
        """A key named `name` (exactly: the tests' names differ, Redis is one per session)."""
        new = await self.lifecycle.create(name, scopes, expires_at=None, actor=TEST_ACTOR)
        return new.key


async def start_dashboard(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext, **sections: Any
) -> Dashboard:
    from tests.authsupport import ROUTES

    proxy: Proxy = await start_proxy(
        admin={"enabled": True, "address": "127.0.0.1", "port": 0},
        keys=FAST_KEYS,
        routes=ROUTES,
        **sections,
    )
    app = proxy.server.sidecar.admin_app
    assert app is not None
    assert proxy.server.admin_port is not None
    return Dashboard(
        proxy, f"https://localhost:{proxy.server.admin_port}", app[CONTEXT].lifecycle, client_ssl
    )
