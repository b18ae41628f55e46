"""Helpers shared by the tests that call the proxy with keys: the routes they run with, one
call and its answer, the event it left, and the `WWW-Authenticate` challenges to expect."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from multidict import CIMultiDictProxy

from tests.conftest import Proxy
from tests.helpers import wait_until
from tests.keysupport import bearer, event_for

ROUTES: list[dict[str, Any]] = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/orders/**", "methods": ["GET", "HEAD"], "scopes": ["orders:read"]},
    {
        "path": "/v1/orders/**",
        "methods": ["POST", "PUT", "PATCH", "DELETE"],
        "scopes": ["orders:write"],
    },
    {"path": "/v1/admin/**", "scopes": ["admin:manage"]},
]
INVALID_TOKEN = 'Bearer realm="sidecar", error="invalid_token"'
EXPIRED = INVALID_TOKEN + ', error_description="key expired"'
# A sidecar that never answers must fail the test, not hang it for aiohttp's default 5 min.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any
    request_id: str


async def call(
    proxy: Proxy,
    path: str,
    *,
    key: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Answer:
    request_id = f"t-{uuid.uuid4().hex}"
    sent = {"X-Request-Id": request_id, **(bearer(key) if key else {}), **(headers or {})}
    kwargs.setdefault("timeout", REQUEST_TIMEOUT)
    async with proxy.request(method, path, headers=sent, **kwargs) as response:
        if response.content_type in ("application/json", "application/problem+json"):
            body: Any = await response.json(content_type=None)
        else:
            body = await response.text()
        return Answer(response.status, response.headers, body, request_id)


async def expect_event(redis: aioredis.Redis, request_id: str, name: str) -> dict[str, Any]:
    """The event written for `request_id`, which must be `name` (polled: writes are batched)."""
    found: dict[str, Any] = {}

    async def written() -> bool:
        event = await event_for(redis, request_id)
        if event is not None:
            found.update(event)
        return event is not None

    await wait_until(written, within=3)
    assert found["event"] == name, found
    return found
