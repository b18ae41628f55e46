"""`/login` and `/logout`: sign in by pasting an admin key, sign out by ending the session.

The key is checked by the admin API's own `verify_admin_key` (the proxy's authenticator, its
per-IP failure limit, a `sign_in_failed` admin event when refused); a success is a `signed_in`
event. The key string is never kept: not in the session, not in a log, not in the page that
answers a failed attempt.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.admin.auth import caller_ip, verify_admin_key
from sidecar.admin.context import REQUEST_ID
from sidecar.dashboard import csrf
from sidecar.dashboard.rendering import DASHBOARD, SESSION, context_of, render, see_other
from sidecar.dashboard.sessions import clear_session_cookie, set_session_cookie
from sidecar.errors import Rejected

_MAX_KEY = 512  # far above any key this sidecar issues; a paste of a whole file is not one


async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form, with a fresh double-submit CSRF token."""
    if SESSION in request:
        return see_other("/activity")
    return _form(request)


def _form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    token = csrf.new_token()
    response = render(request, "login.html", {"csrf": token, "error": error}, status=status)
    csrf.set_login_cookie(response, token)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """Check the pasted key; on success begin a session and go to the activity page."""
    form = await request.post()
    csrf.check(request.cookies.get(csrf.LOGIN_COOKIE), form.get(csrf.FIELD))
    presented = form.get("key")
    key = presented.strip() if isinstance(presented, str) else ""
    context = context_of(request)
    client_ip = caller_ip(request, context)
    try:
        caller = await verify_admin_key(
            context, key[:_MAX_KEY] or None, client_ip, request.get(REQUEST_ID, "")
        )
    except Rejected as exc:
        if exc.status == 401:
            return _form(request, exc.detail, 401)
        raise
    dashboard = request.app[DASHBOARD]
    session = await dashboard.sessions.begin(caller)
    await context.admin_events.record(
        "signed_in", caller.actor(), caller.name, {"via": "dashboard"}
    )
    response = see_other("/activity")
    set_session_cookie(response, session, dashboard.sessions.ttl_s)
    response.del_cookie(csrf.LOGIN_COOKIE, path="/", secure=True, httponly=True)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (the gate checked the form's CSRF token) and go back to sign-in."""
    session = request.get(SESSION)
    if session is not None:
        await request.app[DASHBOARD].sessions.end(session.session_id)
    response = see_other("/login")
    clear_session_cookie(response)
    return response
