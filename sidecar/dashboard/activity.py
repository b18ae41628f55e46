"""Security → API key activity (`/activity`): the chart of allowed vs each rejection event
over a range, the event table with filters and paging, and `/activity/events.json`, which the
live mode polls every second for the newest events under the same filters."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from sidecar.admin.api.activity import RANGES, parse_range
from sidecar.admin.api.events import EVENT_QUERY, read_events
from sidecar.admin.context import AdminContext
from sidecar.dashboard.charts import bar_chart
from sidecar.dashboard.filters import link, read_filters
from sidecar.dashboard.reasons import reason
from sidecar.dashboard.rendering import context_of, render
from sidecar.errors import InvalidParameter

PAGE_SIZE = 50
# The events the filter offers even before any happened (what the proxy and admin port emit).
KNOWN_EVENTS = (
    "missing_key",
    "malformed_key",
    "unknown_key",
    "invalid_secret",
    "revoked_key",
    "expired_key",
    "wrong_environment",
    "ip_not_allowed",
    "missing_scope",
    "rate_limited",
    "key_in_url",
    "key_in_header",
    "admin_key_on_proxy",
    "no_route",
)


def add_routes(router: web.UrlDispatcher) -> None:
    """The activity page and its live feed."""
    router.add_get("/activity", activity_page)
    router.add_get("/activity/events.json", live_events)


def chosen_range(request: web.Request) -> str:
    """The `range` asked for (24h when none)."""
    text = request.query.get("range", "").strip() or "24h"
    try:
        return parse_range(text)
    except ValueError as exc:
        raise InvalidParameter("range", str(exc)) from None


async def event_rows(context: AdminContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows for `items` (event documents), each with its reason in words."""
    expiries = {record.key_id: record.expires_at for record in await context.store.records()}
    now = time.time()
    return [
        {
            "ts": str(item.get("ts", "")),
            "event": str(item.get("event", "")),
            "key": str(item.get("key_name") or item.get("key_id") or ""),
            "client_ip": str(item.get("client_ip", "")),
            "request": f"{item.get('method', '')} {item.get('path', '')}".strip(),
            "reason": reason(item, now, expiries.get(str(item.get("key_id", "")))),
            "request_id": str(item.get("request_id", "")),
        }
        for item in items
    ]


async def activity_page(request: web.Request) -> web.StreamResponse:
    """The chart and the first (or the cursor's) page of events."""
    context = context_of(request)
    range_ = chosen_range(request)
    values, texts = read_filters(request, EVENT_QUERY, extra=("range", "live"))
    values["limit"] = values["limit"] or PAGE_SIZE
    document: dict[str, Any] = dict(await context.activity.buckets(range_, None))
    page = await read_events(context, values)
    feed: dict[str, str] = {
        name: texts[name] for name in ("event", "key", "ip", "since", "until") if name in texts
    }
    return render(
        request,
        "activity.html",
        {
            "range": range_,
            "ranges": RANGES,
            "activity_chart": bar_chart(document),
            "rows": await event_rows(context, page.items),
            "filters": texts,
            "events": sorted({*KNOWN_EVENTS, *document["totals"]["rejected"]}),
            "key_names": sorted({record.name for record in await context.store.records()}),
            "next": None
            if page.next_cursor is None
            else link("/activity", texts, cursor=page.next_cursor),
            "first": link("/activity", texts, cursor=None) if "cursor" in texts else None,
            "feed": link("/activity/events.json", feed),
            "live": texts.get("live") == "1",
        },
    )


async def live_events(request: web.Request) -> web.StreamResponse:
    """The newest events under the page's filters, as rows (the script fills the table with
    `textContent`: a value is never parsed as markup)."""
    context = context_of(request)
    values, _ = read_filters(request, EVENT_QUERY)
    values["limit"] = values["limit"] or PAGE_SIZE
    values["cursor"] = None  # live mode always shows the newest
    page = await read_events(context, values)
    return web.json_response({"rows": await event_rows(context, page.items)})
