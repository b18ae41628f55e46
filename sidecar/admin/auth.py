"""Who an admin request comes from: its Bearer key, verified by the proxy's `Authenticator`
(one argon2 cache, one per-IP failure limit), which must hold a `sidecar:` scope and the scope
the endpoint declares.

A refused sign-in is an admin event (`sign_in_failed`, with the reason as SPEC §6 names it),
kept before the 401 is answered, like the proxy's refusals.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.admin.context import CALLER, REQUEST_ID, AdminCaller, AdminContext
from sidecar.audit.admin_events import Actor
from sidecar.errors import AuthenticationFailed, BadRequest, KeyInUrl, MissingScope, Rejected
from sidecar.guard.keyshapes import find_key
from sidecar.keys.scopes import is_admin
from sidecar.proxy.headers import client_address


async def authenticate_admin(request: web.Request, context: AdminContext, scope: str) -> None:
    """Set `request[CALLER]`, or raise the refusal: 401 for no key, a bad one or a proxy key
    (`not_an_admin_key`), 429 past the per-IP failure limit, 403 naming `scope` when the key
    lacks it (scopes imply nothing: `sidecar:keys` does not grant `sidecar:read`)."""
    client_ip = caller_ip(request, context)
    try:
        await _refuse_misplaced_key(request, context, client_ip)
        presented = _bearer(request)
    except Rejected as exc:
        await _record_failure(context, exc, client_ip, request[REQUEST_ID])
        raise
    caller = await verify_admin_key(context, presented, client_ip, request[REQUEST_ID])
    request[CALLER] = caller
    if scope not in caller.scopes:
        raise MissingScope(f"the key lacks scope {scope}", [scope])


def caller_ip(request: web.Request, context: AdminContext) -> str:
    """The client's address, through the trusted proxies as the proxy port reads it."""
    client_ip, _ = client_address(
        request.remote or "",
        request.headers.getall("X-Forwarded-For", ()),
        tuple(context.settings.trusted_proxies),
    )
    return client_ip


async def verify_admin_key(
    context: AdminContext, presented: str | None, client_ip: str, request_id: str
) -> AdminCaller:
    """The admin key `presented` as a caller, or the refusal (recorded as `sign_in_failed`):
    the one check behind both the API's Bearer header and the dashboard's sign-in form."""
    try:
        principal = await context.authenticator.authenticate(presented, client_ip)
        if not is_admin(principal.scopes):
            raise AuthenticationFailed(
                "this key is not an admin key (it holds no sidecar: scope)",
                event="not_an_admin_key",
                key_id=principal.key_id,
                key_name=principal.name,
            )
    except Rejected as exc:
        await _record_failure(context, exc, client_ip, request_id)
        raise
    return AdminCaller(
        key_id=principal.key_id,
        name=principal.name,
        scopes=principal.scopes,
        client_ip=client_ip,
        request_id=request_id,
    )


async def _record_failure(
    context: AdminContext, exc: Rejected, client_ip: str, request_id: str
) -> None:
    """`sign_in_failed`, naming the key by its public id and name when it got that far."""
    key_id = key_name = None
    if isinstance(exc, AuthenticationFailed):
        key_id, key_name = exc.key_id, exc.key_name
    actor = Actor(
        kind="key",
        name=key_name or "-",
        key_id=key_id,
        client_ip=client_ip,
        request_id=request_id,
    )
    detail: dict[str, object] = {"event": exc.event or str(exc.status), "reason": exc.detail}
    await context.admin_events.record("sign_in_failed", actor, key_name, detail)


async def _refuse_misplaced_key(
    request: web.Request, context: AdminContext, client_ip: str
) -> None:
    """SPEC §4/§14 on this port too: a key in the query string (a URL ends up in histories,
    proxies' logs, Referer headers) is refused, and flagged exposed once its secret verifies."""
    presented = find_key(request.rel_url.raw_query_string)
    if presented is not None:
        await context.authenticator.flag_exposed(presented, client_ip)
        raise KeyInUrl("an API key in the URL is refused; it is now flagged as exposed")


def _bearer(request: web.Request) -> str | None:
    # Bearer only: the proxy's `keys.header` (X-API-Key) is for upstream clients, and an
    # admin key must not be sent the way proxy keys are.
    if len(request.headers.getall("Authorization", ())) > 1:
        # SPEC §14, one reading: a server in front may take the other one.
        raise BadRequest("more than one Authorization header")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
