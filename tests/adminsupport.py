"""Helpers for the admin API's tests: a sidecar with the admin port on, and keys made through
the same `KeyLifecycle` the CLI and the API use."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from sidecar.admin.context import CONTEXT
from sidecar.audit.admin_events import ADMIN_EVENTS_STREAM, Actor
from sidecar.keys.lifecycle import KeyLifecycle
from sidecar.keys.store import NewKey
from tests.authsupport import ROUTES
from tests.conftest import Proxy, ProxyFactory
from tests.keysupport import FAST_KEYS

ADMIN_ON = {"enabled": True, "address": "127.0.0.1", "port": 0}
TEST_ACTOR = Actor(kind="cli", name="cli:test")


class Admin:
    """A sidecar with its admin port, and an HTTPS client for both ports."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        assert proxy.server.admin_port is not None
        self.url = f"https://localhost:{proxy.server.admin_port}"
        app = proxy.server.sidecar.admin_app
        assert app is not None
        self.lifecycle: KeyLifecycle = app[CONTEXT].lifecycle

    def request(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.proxy.session.request(method, self.url + path, headers=headers, **kwargs)

    async def issue(self, name: str, *scopes: str) -> NewKey:
        return await self.lifecycle.create(name, scopes, expires_at=None, actor=TEST_ACTOR)


async def start_admin(start_proxy: ProxyFactory, **sections: Any) -> Admin:
    proxy: Proxy = await start_proxy(admin=ADMIN_ON, keys=FAST_KEYS, routes=ROUTES, **sections)
    return Admin(proxy)


async def admin_events(redis: aioredis.Redis) -> list[dict[str, Any]]:
    """Every admin event, oldest first."""
    entries = await redis.xrange(ADMIN_EVENTS_STREAM) or []
    return [json.loads(fields[b"event"]) for _id, fields in entries if fields is not None]
