"""`GET activity`: requests allowed and rejected (per event) in buckets over a range, from the
per-minute counters (`ActivityReader`), never from a scan of the streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from sidecar.admin.endpoint import Param
from sidecar.admin.params import parse_text, read_query

if TYPE_CHECKING:
    from sidecar.admin.context import AdminContext

RANGES = ("1h", "24h", "7d", "30d")


def parse_range(text: str) -> str:
    """One of `RANGES`."""
    if text not in RANGES:
        raise ValueError(f"one of {', '.join(RANGES)}")
    return text


ACTIVITY_QUERY = (
    Param(
        "range", {"type": "string", "enum": list(RANGES), "default": "24h"}, "the span", parse_range
    ),
    Param("key", {"type": "string", "minLength": 1}, "one key's id", parse_text),
)


async def get_activity(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """`{buckets: [{start, allowed, rejected: {event: n}}], totals}` over the range."""
    values = read_query(request, ACTIVITY_QUERY)
    answer = await context.activity.buckets(values["range"] or "24h", values["key"])
    return web.json_response(answer)
