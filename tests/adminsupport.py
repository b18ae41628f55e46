"""Helpers for the admin API's tests: a sidecar with the admin port on (real TLS on loopback,
real Redis), keys made through the same `KeyLifecycle` the CLI and the API use, and an admin
client whose every answer is checked against the served `GET /admin/v1/openapi.json`: the
document is what clients are told, so any answer a test sees that it does not describe fails
that test, whichever test it was."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonschema
import pytest
import redis.asyncio as aioredis

from sidecar.admin.context import CONTEXT
from sidecar.audit.admin_events import ADMIN_EVENTS_STREAM, Actor
from sidecar.keys.lifecycle import KeyLifecycle
from sidecar.keys.scopes import AUDIT, KEYS, READ
from sidecar.keys.store import NewKey
from tests.authsupport import ROUTES
from tests.conftest import Proxy, ProxyFactory
from tests.keysupport import FAST_KEYS, bearer, issue

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


PREFIX = "/admin/v1"
ALL_ADMIN = (READ, KEYS, AUDIT)


def admin_sections(**sections: Any) -> dict[str, Any]:
    """The settings of a sidecar with the admin port on (any free port) and cheap argon2."""
    return {"admin": {"enabled": True, "port": 0}, "keys": FAST_KEYS, "routes": ROUTES, **sections}


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class AdminClient:
    """Calls the admin API and validates each answer against its OpenAPI document."""

    session: aiohttp.ClientSession
    url: str
    document: dict[str, Any] | None = None
    checked: list[tuple[str, str, int]] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        headers = bearer(key) if key is not None else {}
        async with self.session.request(
            method, self.url + path, headers=headers, json=body, params=params
        ) as response:
            raw = await response.read()
            answer = Answer(
                response.status, json.loads(raw) if raw else None, dict(response.headers)
            )
        await self._validate(method, path, answer)
        return answer

    async def get(self, path: str, key: str | None = None, /, **params: str) -> Answer:
        # Positional-only: `key` is a query parameter of several lists too.
        return await self.call("GET", path, key, params=params)

    async def _validate(self, method: str, path: str, answer: Answer) -> None:
        if self.document is None:
            async with self.session.get(f"{self.url}{PREFIX}/openapi.json") as response:
                assert response.status == 200
                self.document = json.loads(await response.read())
        assert self.document is not None
        operation = operation_of(self.document, method, path)
        responses = operation["responses"]
        assert str(answer.status) in responses, f"{method} {path}: {answer.status} undocumented"
        documented = responses[str(answer.status)].get("content")
        if documented is None:
            assert answer.body is None, f"{method} {path}: a body the document does not have"
        else:
            content_type = answer.headers.get("Content-Type", "").split(";")[0]
            assert content_type in documented, f"{method} {path}: {content_type}"
            # Beside the schema, so its `#/components/...` references resolve as in the document.
            schema = {
                **documented[content_type]["schema"],
                "components": self.document["components"],
            }
            jsonschema.Draft202012Validator(schema).validate(answer.body)
        self.checked.append((method, path_template(self.document, path), answer.status))


def path_template(document: dict[str, Any], path: str) -> str:
    """The documented path (`/admin/v1/keys/{name}`) a concrete one matches."""
    for template in document["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return str(template)
    raise AssertionError(f"{path} is not in the OpenAPI document")


def operation_of(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operations = document["paths"][path_template(document, path)]
    assert method.lower() in operations, f"{method} {path} is not documented"
    operation: dict[str, Any] = operations[method.lower()]
    return operation


@dataclass
class AdminSidecar:
    """A sidecar, its admin client and what it takes to issue keys the way the CLI does."""

    proxy: Proxy
    admin: AdminClient
    redis: aioredis.Redis

    async def key(self, name: str, scopes: Iterable[str]) -> str:
        """A key issued straight into Redis, as `sidecar keys create` bootstraps one."""
        settings = self.proxy.server.sidecar.settings
        return (await issue(self.redis, settings, name, scopes)).key


@pytest.fixture
async def admin_sidecar(start_proxy: ProxyFactory, redis_client: aioredis.Redis) -> AdminSidecar:
    return await start_admin_sidecar(start_proxy, redis_client)


async def start_admin_sidecar(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, **sections: Any
) -> AdminSidecar:
    proxy: Proxy = await start_proxy(**admin_sections(**sections))
    port = proxy.server.admin_port
    assert port is not None
    # The proxy's session trusts the test CA and is closed with the sidecar.
    return AdminSidecar(
        proxy, AdminClient(proxy.session, f"https://localhost:{port}"), redis_client
    )
