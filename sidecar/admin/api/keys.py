"""`/admin/v1/keys…`: list, show, create, rotate, revoke and delete keys through the same
`KeyLifecycle` as `sidecar keys` (so each action is an admin event, actor the calling key).
A key is in an answer only once: the 201 of its creation or rotation."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.admin.context import CALLER
from sidecar.admin.params import check_fields, read_body
from sidecar.audit.admin_events import Actor
from sidecar.durations import parse_duration, parse_moment
from sidecar.errors import Conflict, InvalidParameter, MissingScope, NotFound
from sidecar.keys.format import check_name, check_scope
from sidecar.keys.lifecycle import InvalidKeyRequest
from sidecar.keys.records import KeyRecord
from sidecar.keys.scopes import ADMIN_SCOPES, check_admin_scope, is_admin
from sidecar.keys.store import KeyStoreError, NewKey, NoSuchKey

if TYPE_CHECKING:
    from sidecar.admin.context import AdminContext

# SPEC §14: the same bounds as the command line's, so the API issues nothing the CLI refuses.
MAX_EXPIRES = timedelta(days=3650)
MAX_GRACE = timedelta(days=365)
DEFAULT_GRACE = "24h"
MAX_SCOPES = 64
_NAME_RULE = "1-64 letters, digits, '.', '_', ':' or '-'"
_SCOPE_RULE = "each resource:action, resource:* or *"
_ADMIN_RULE = f"the reserved scopes are {', '.join(ADMIN_SCOPES)}"
_EXPIRES_RULE = "use 30d, 24h or an RFC 3339 time, later than now and at most 3650d ahead"
_GRACE_RULE = "use 0, 30m, 24h or 7d, at most 365d"
CREATE_FIELDS = ("name", "scopes", "expires", "allow_ips", "service")
ROTATE_FIELDS = ("grace",)


async def list_keys(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """Every key's metadata, as `keys list --json` shows it (one page: keys are few)."""
    now = time.time()
    items = [context.lifecycle.describe(record, now) for record in await context.store.records()]
    return web.json_response({"items": items, "next_cursor": None})


async def get_key(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """The current key of a name (the newest of its rotations)."""
    return web.json_response(
        context.lifecycle.describe(await _newest(request, context), time.time())
    )


async def create_key(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """201 with the new key, shown this once."""
    body = await read_body(request)
    check_fields(body, CREATE_FIELDS)
    name = _name(body.get("name"), "name")
    scopes = _scopes(body.get("scopes"))
    _only_held(request, scopes, "grant")
    expires_at = None
    if body.get("expires") is not None:
        expires = _string(body["expires"], "expires")
        expires_at = _value(
            lambda: parse_moment(expires, at_most=MAX_EXPIRES),
            "expires",
            _EXPIRES_RULE,
        )
    allow_ips = _allow_ips(body.get("allow_ips"))
    service = None if body.get("service") is None else _name(body["service"], "service")
    try:
        new = await context.lifecycle.create(
            name,
            scopes,
            expires_at=None if expires_at is None else expires_at.timestamp(),
            allow_ips=allow_ips,
            service=service,
            actor=actor(request),
        )
    except InvalidKeyRequest as exc:  # checked above already; the lifecycle checks again
        raise InvalidParameter(exc.field, "not a value a key can have") from None
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return _shown_once(new, context)


async def rotate_key(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """201 with the successor, shown this once; the old key works for `grace` more."""
    body = await read_body(request)
    check_fields(body, ROTATE_FIELDS)
    grace_text = _string(body.get("grace", DEFAULT_GRACE), "grace")
    grace = _value(lambda: parse_duration(grace_text, at_most=MAX_GRACE), "grace", _GRACE_RULE)
    newest = await _newest(request, context)
    _only_held(request, newest.scopes, "rotate a key holding")  # the 201 hands over its successor
    name = newest.name
    try:
        new = await context.lifecycle.rotate(
            name, grace_s=grace.total_seconds(), actor=actor(request)
        )
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return _shown_once(new, context)


async def revoke_key(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """Revoke a name's keys (the current one and any still in a rotation's grace)."""
    name = (await _newest(request, context)).name
    try:
        ids = await context.lifecycle.revoke(name, actor=actor(request))
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return web.json_response({"name": name, "revoked": ids})


async def delete_key(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """204: every record of the name is gone; its keys fail as unknown from then on."""
    name = (await _newest(request, context)).name
    try:
        await context.lifecycle.delete(name, actor=actor(request))
    except KeyStoreError as exc:
        raise _refusal(exc) from None
    return web.Response(status=204)


def actor(request: web.Request) -> Actor:
    """The calling admin key, as the admin events name it."""
    return request[CALLER].actor()


def _only_held(request: web.Request, scopes: Iterable[str], doing: str) -> None:
    """403 unless the caller holds every reserved scope in `scopes`: without this a key with
    `sidecar:keys` alone minted (or rotated into its hands) a key with `sidecar:audit`, i.e.
    read decrypted bodies it was never given. Proxy scopes are what `sidecar:keys` manages."""
    held = request[CALLER].scopes
    lacking = sorted({scope for scope in scopes if is_admin([scope]) and scope not in held})
    if lacking:
        raise MissingScope(f"cannot {doing} {', '.join(lacking)}: the key lacks it", lacking)


def _refusal(exc: KeyStoreError) -> NotFound | Conflict:
    # The store's messages name the key, never its string: safe to pass on.
    return NotFound(str(exc)) if isinstance(exc, NoSuchKey) else Conflict(str(exc))


async def _newest(request: web.Request, context: AdminContext) -> KeyRecord:
    name = request.match_info["name"]
    try:
        check_name(name)
    except ValueError:
        # Not a name a key can have: never looked up, never echoed (a key string pasted into
        # the path came back in the 404's detail).
        raise NotFound("no key by that name (names are 1-64 of A-Z a-z 0-9 . _ : -)") from None
    records = await context.store.records_named(name)
    if not records:
        raise NotFound(f"no key named {name!r}")
    return max(records, key=lambda record: record.created_at)


def _shown_once(new: NewKey, context: AdminContext) -> web.StreamResponse:
    described = context.lifecycle.describe(new.record, time.time())
    return web.json_response({"key": new.key, **described}, status=201)


def _value(parse: Any, field: str, forms: str) -> Any:
    """`parse()`, or 400 naming `field`. `forms` replaces a parser's message that quotes the
    value (those begin with it): a key pasted into the wrong field must not come back."""
    try:
        return parse()
    except ValueError as exc:
        detail = str(exc)
        raise InvalidParameter(field, forms if detail.startswith(("'", '"')) else detail) from None


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(field, "must be a string")
    return value


def _name(value: object, field: str) -> str:
    if value is None:
        raise InvalidParameter(field, "is required")
    text = _string(value, field)
    checked: str = _value(lambda: check_name(text), field, _NAME_RULE)
    return checked


def _scopes(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidParameter("scopes", "a non-empty list of scopes")
    if len(value) > MAX_SCOPES:
        raise InvalidParameter("scopes", f"at most {MAX_SCOPES}")
    scopes = []
    for scope in value:
        text = _string(scope, "scopes")
        _value(lambda text=text: check_scope(text), "scopes", _SCOPE_RULE)
        _value(lambda text=text: check_admin_scope(text), "scopes", _ADMIN_RULE)
        scopes.append(text)
    return scopes


def _allow_ips(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidParameter("allow_ips", "a list of addresses or CIDRs")
    cidrs = []
    for cidr in value:
        text = _string(cidr, "allow_ips")
        parse = lambda text=text: ipaddress.ip_network(text, strict=False)  # noqa: E731
        _value(parse, "allow_ips", "each an IP address or CIDR (10.0.0.0/8)")
        cidrs.append(text)
    return cidrs
