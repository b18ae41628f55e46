"""A stand-in for `sidecar.admin.endpoints` (issue 14, helper B) of the same shape: two
endpoints, enough to test the server, its authentication and the admin events end to end.
Deleted when the real table is merged (the runtime then imports `ENDPOINTS` from there)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sidecar.admin.context import CALLER, AdminContext
from sidecar.admin.server import AdminHandler
from sidecar.errors import Conflict, InvalidParameter
from sidecar.keys.lifecycle import InvalidKeyRequest
from sidecar.keys.store import KeyExists


@dataclass(frozen=True, slots=True)
class StubEndpoint:
    """The fields of the real `Endpoint` the server reads."""

    method: str
    path: str
    scope: str | None
    summary: str
    handler: AdminHandler


async def _list_keys(request: web.Request, context: AdminContext) -> web.StreamResponse:
    now = time.time()
    items = [context.lifecycle.describe(record, now) for record in await context.store.records()]
    return web.json_response({"items": items, "next_cursor": None})


async def _create_key(request: web.Request, context: AdminContext) -> web.StreamResponse:
    body: Any = await request.json()
    try:
        new = await context.lifecycle.create(
            body["name"], body["scopes"], expires_at=None, actor=request[CALLER].actor()
        )
    except InvalidKeyRequest as exc:
        raise InvalidParameter(exc.field, str(exc)) from None
    except KeyExists as exc:
        raise Conflict(str(exc)) from None
    answer = {"key": new.key, **context.lifecycle.describe(new.record, time.time())}
    return web.json_response(answer, status=201)


ENDPOINTS = (
    StubEndpoint("GET", "/admin/v1/keys", "sidecar:read", "List keys", _list_keys),
    StubEndpoint("POST", "/admin/v1/keys", "sidecar:keys", "Create a key", _create_key),
)
