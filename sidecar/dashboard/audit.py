"""Audit log (`/audit`): records without bodies, filtered and paged as the API's list is;
`/audit/{request_id}`: one record, with its raw body, mapped body and response side by side
only for a key holding `sidecar:audit` (others see the metadata, bodies left out)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from sidecar.admin.api.audit import AUDIT_QUERY, BODIES, find_record, read_audit, without_bodies
from sidecar.dashboard.filters import link, read_filters
from sidecar.dashboard.rendering import context_of, render, session_of
from sidecar.keys.scopes import AUDIT

PAGE_SIZE = 50


def add_routes(router: web.UrlDispatcher) -> None:
    """The audit list and a record's page."""
    router.add_get("/audit", audit_page)
    router.add_get("/audit/{request_id}", record_page)


async def audit_page(request: web.Request) -> web.StreamResponse:
    """Newest records first, under the form's filters."""
    values, texts = read_filters(request, AUDIT_QUERY)
    values["limit"] = values["limit"] or PAGE_SIZE
    page = await read_audit(context_of(request), values)
    return render(
        request,
        "audit.html",
        {
            "records": page.items,
            "filters": texts,
            "next": None
            if page.next_cursor is None
            else link("/audit", texts, cursor=page.next_cursor),
            "first": link("/audit", texts, cursor=None) if "cursor" in texts else None,
        },
    )


def shown(value: object) -> str:
    """A body as text: a string as it is, anything else as indented JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


async def record_page(request: web.Request) -> web.StreamResponse:
    """One record; its bodies side by side for `sidecar:audit` only."""
    record: dict[str, Any] = await find_record(
        context_of(request), request.match_info["request_id"]
    )
    may_read_bodies = AUDIT in session_of(request).scopes
    bodies = []
    if may_read_bodies:
        titles = {"raw_body": "Raw body", "mapped_body": "Mapped body", "body": "Response body"}
        for section, name in BODIES:
            inner = record.get(section)
            value = inner.get(name) if isinstance(inner, dict) else None
            bodies.append({"title": titles[name], "text": shown(value)})
    metadata = shown(without_bodies(record))
    return render(
        request,
        "record.html",
        {"record": record, "metadata": metadata, "bodies": bodies, "may_read": may_read_bodies},
    )
