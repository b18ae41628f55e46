"""Keys (`/keys`): every key with its status badges, last use and 24 h requests; create (the
key shown once), rotate with a chosen grace, revoke after a confirmation page; a key's page
(`/keys/{name}`) with its activity, events in words and recent requests. Every change goes
through the API's `KeyLifecycle` with the signed-in key as the actor: each is an admin event."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from sidecar.admin.api.audit import read_audit
from sidecar.admin.api.events import read_events
from sidecar.admin.api.keys import DEFAULT_GRACE, MAX_EXPIRES, MAX_GRACE, actor
from sidecar.admin.context import AdminContext
from sidecar.dashboard.activity import chosen_range, event_rows
from sidecar.dashboard.charts import bar_chart
from sidecar.dashboard.rendering import context_of, render, require
from sidecar.durations import parse_duration, parse_moment
from sidecar.errors import Conflict, InvalidParameter, NotFound
from sidecar.keys.authenticator import SUNSET_NOTICE_S
from sidecar.keys.lifecycle import InvalidKeyRequest
from sidecar.keys.records import KeyRecord
from sidecar.keys.scopes import KEYS, READ
from sidecar.keys.store import KeyStoreError, NewKey, NoSuchKey

GRACES = ("0", "1h", "24h", "7d")


def add_routes(router: web.UrlDispatcher) -> None:
    """The keys pages and their forms."""
    router.add_get("/keys", keys_page)
    router.add_post("/keys", create)
    router.add_get("/keys/{name}", key_page)
    router.add_post("/keys/{name}/rotate", rotate)
    router.add_get("/keys/{name}/revoke", confirm_revoke)
    router.add_post("/keys/{name}/revoke", revoke)


def badges(record: KeyRecord, now: float) -> list[str]:
    """active, expiring soon, rotating, expired, revoked, exposed (SPEC §16)."""
    status = record.status(now)
    shown = [status]
    expires_at = record.expires_at
    if status == "active" and expires_at is not None and expires_at - now < SUNSET_NOTICE_S:
        shown.append("expiring soon")
    if record.exposed:
        shown.append("exposed")
    return shown


async def requests_24h(context: AdminContext, record: KeyRecord) -> int:
    """The key's requests (allowed and rejected) over the last 24 hours."""
    totals = (await context.activity.buckets("24h", record.key_id))["totals"]
    assert isinstance(totals, dict)
    return int(totals["allowed"]) + sum(int(n) for n in totals["rejected"].values())


async def keys_page(request: web.Request, shown: dict[str, Any] | None = None) -> web.Response:
    """Every key, newest first; `shown`: a key just created or rotated, shown this once."""
    context = context_of(request)
    now = time.time()
    records = sorted(await context.store.records(), key=lambda r: -r.created_at)
    rows = [
        {
            "record": record,
            "badges": badges(record, now),
            "described": context.lifecycle.describe(record, now),
            "requests": await requests_24h(context, record),
        }
        for record in records
    ]
    return render(request, "keys.html", {"rows": rows, "shown": shown, "graces": GRACES})


async def create(request: web.Request) -> web.StreamResponse:
    """Create a key from the form and show it once."""
    require(request, KEYS)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    scopes = str(form.get("scopes", "")).replace(",", " ").split()
    expires = str(form.get("expires", "")).strip()
    expires_at = None
    if expires:
        try:
            expires_at = parse_moment(expires, at_most=MAX_EXPIRES).timestamp()
        except ValueError:
            raise InvalidParameter("expires", "use 30d, 24h or an RFC 3339 time") from None
    allow_ips = str(form.get("allow_ips", "")).replace(",", " ").split()
    context = context_of(request)
    try:
        new = await context.lifecycle.create(
            name, scopes, expires_at=expires_at, allow_ips=allow_ips, actor=actor(request)
        )
    except InvalidKeyRequest as exc:
        raise InvalidParameter(exc.field, str(exc)) from None
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return await keys_page(request, _shown(new, "created"))


async def rotate(request: web.Request) -> web.StreamResponse:
    """Issue a successor with the chosen grace and show it once."""
    require(request, KEYS)
    form = await request.post()
    grace_text = str(form.get("grace", DEFAULT_GRACE)).strip() or DEFAULT_GRACE
    try:
        grace = parse_duration(grace_text, at_most=MAX_GRACE)
    except ValueError:
        raise InvalidParameter("grace", "use 0, 30m, 24h or 7d, at most 365d") from None
    context = context_of(request)
    record = await _newest(context, request.match_info["name"])
    try:
        new = await context.lifecycle.rotate(
            record.name, grace_s=grace.total_seconds(), actor=actor(request)
        )
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return await keys_page(request, _shown(new, f"rotated (the old key works {grace_text} more)"))


async def confirm_revoke(request: web.Request) -> web.StreamResponse:
    """The confirmation step before a revocation."""
    require(request, KEYS)
    record = await _newest(context_of(request), request.match_info["name"])
    return render(request, "revoke.html", {"record": record})


async def revoke(request: web.Request) -> web.StreamResponse:
    """Revoke the name's keys (the confirmation page's form)."""
    require(request, KEYS)
    context = context_of(request)
    record = await _newest(context, request.match_info["name"])
    try:
        ids = await context.lifecycle.revoke(record.name, actor=actor(request))
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return render(request, "revoked.html", {"name": record.name, "ids": ids})


async def key_page(request: web.Request) -> web.StreamResponse:
    """One key: metadata, activity chart, events with reasons, recent requests."""
    require(request, READ)
    context = context_of(request)
    record = await _newest(context, request.match_info["name"])
    range_ = chosen_range(request)
    now = time.time()
    document = dict(await context.activity.buckets(range_, record.key_id))
    window = {"since": None, "until": None, "cursor": None, "limit": 20}
    events = await read_events(context, {**window, "event": None, "key": record.key_id, "ip": None})
    audit = await read_audit(
        context,
        {**window, "key": record.key_id, "status": None, "method": None, "path_prefix": None},
    )
    return render(
        request,
        "key.html",
        {
            "record": record,
            "described": context.lifecycle.describe(record, now),
            "badges": badges(record, now),
            "range": range_,
            "activity_chart": bar_chart(document),
            "rows": await event_rows(context, events.items),
            "requests": audit.items,
            "graces": GRACES,
        },
    )


def _shown(new: NewKey, what: str) -> dict[str, Any]:
    return {"key": new.key, "name": new.record.name, "what": what}


async def _newest(context: AdminContext, name: str) -> KeyRecord:
    records = await context.store.records_named(name)
    if not records:
        raise NotFound("no key with that name")
    return max(records, key=lambda record: record.created_at)


def _refusal(exc: KeyStoreError) -> NotFound | Conflict:
    # The store's messages name the key, never its string.
    return NotFound(str(exc)) if isinstance(exc, NoSuchKey) else Conflict(str(exc))
