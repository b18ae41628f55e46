"""`GET events` (authentication events) and `GET admin-events` (operators' actions): pages of
the two streams, newest first, filtered on the documents' own fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.admin.api.listing import PAGING, page, source_of
from sidecar.admin.endpoint import Param
from sidecar.admin.paging import Page
from sidecar.admin.params import parse_text, read_query
from sidecar.archive.tables import ADMIN_EVENTS_STREAM

if TYPE_CHECKING:
    from sidecar.admin.context import AdminContext

_TEXT = {"type": "string", "minLength": 1, "maxLength": 256}
EVENT_QUERY = (
    *PAGING,
    Param("event", _TEXT, "the event's name (missing_key, invalid_secret, …)", parse_text),
    Param("key", _TEXT, "the key's name or id", parse_text),
    Param("ip", _TEXT, "the client's address", parse_text),
)
ADMIN_EVENT_QUERY = (
    *PAGING,
    Param("action", _TEXT, "key_created, key_rotated, key_revoked, …", parse_text),
    Param("actor", _TEXT, "the acting key's name or id, or cli:<user>", parse_text),
    Param("target", _TEXT, "the key name acted on", parse_text),
)


async def list_events(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """Authentication events, newest first; paths decrypted when a key is configured."""
    page_ = await read_events(context, read_query(request, EVENT_QUERY))
    return web.json_response(page_.to_json())


async def read_events(context: AdminContext, values: dict[str, Any]) -> Page:
    """One page of authentication events under `EVENT_QUERY`'s parsed `values` (the
    dashboard reads them through this too)."""

    def keep(event: dict[str, Any]) -> bool:
        return (
            _is(event.get("event"), values["event"])
            and (
                _is(event.get("key_name"), values["key"]) or _is(event.get("key_id"), values["key"])
            )
            and _is(event.get("client_ip"), values["ip"])
        )

    source = source_of(context, context.settings.audit.events_stream)
    decrypt = None if context.cipher is None else context.cipher.decrypt_event
    return await page(context, source, values, keep, decrypt)


async def list_admin_events(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """Admin actions (create, rotate, revoke, delete, sign-ins), newest first."""
    values = read_query(request, ADMIN_EVENT_QUERY)

    def keep(event: dict[str, Any]) -> bool:
        actor = event.get("actor")
        actor = actor if isinstance(actor, dict) else {}
        return (
            _is(event.get("action"), values["action"])
            and (
                _is(actor.get("name"), values["actor"]) or _is(actor.get("key_id"), values["actor"])
            )
            and _is(event.get("target"), values["target"])
        )

    source = source_of(context, ADMIN_EVENTS_STREAM)
    return web.json_response((await page(context, source, values, keep, None)).to_json())


def _is(value: object, wanted: str | None) -> bool:
    return wanted is None or value == wanted
