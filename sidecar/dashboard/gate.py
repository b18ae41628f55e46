"""The dashboard's middleware: who is signed in, whether a form is this browser's, and errors
as pages.

Each page request finds its session in Redis and then reads its key's record, so a key revoked
(or expired) ends its sessions on their next request: the record is read on every request,
not through the authenticator's cache, because a session holds no digest of the key string to
find a cache entry with (and must not). One HGETALL each: a dashboard's traffic is a person's.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar.admin.context import REQUEST_ID
from sidecar.dashboard import csrf
from sidecar.dashboard.rendering import (
    DASHBOARD,
    SESSION,
    context_of,
    render,
    see_other,
    sign_in_caller,
)
from sidecar.dashboard.sessions import SESSION_COOKIE, Session, clear_session_cookie
from sidecar.errors import MethodNotAllowed, NotFound, Rejected
from sidecar.keys.scopes import is_admin

log = structlog.get_logger("sidecar.dashboard")

API_PREFIX = "/admin/"
PUBLIC = ("/login", "/static/")  # served without a session
_LIVE_STATUSES = ("active", "rotating")  # a key in its rotation's grace still works


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pass API requests on untouched; for the pages: a session or a redirect to sign-in, the
    CSRF check of every POST, and a refusal or a failure shown as a page."""
    if request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        session = await _live_session(request)
        if session is not None:
            request[SESSION] = session
            sign_in_caller(request, session)
        elif not request.path.startswith(PUBLIC):
            response = see_other("/login")
            if SESSION_COOKIE in request.cookies:
                clear_session_cookie(response)
            return response
        if request.method == "POST" and request.path != "/login":
            # /login checks its own double-submitted token; every other form the session's.
            form = await request.post()
            csrf.check(session.csrf if session is not None else None, form.get(csrf.FIELD))
        return await handler(request)
    except Rejected as exc:
        return _refusal_page(request, exc)
    except web.HTTPNotFound:
        return _refusal_page(request, NotFound("no such page"))
    except web.HTTPMethodNotAllowed:
        return _refusal_page(request, MethodNotAllowed(f"{request.method} is not allowed here"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("dashboard page failed", request_id=request.get(REQUEST_ID, ""))
        return _refusal_page(request, _Failed("the page failed; the log names the request id"))


async def _live_session(request: web.Request) -> Session | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    sessions = request.app[DASHBOARD].sessions
    session = await sessions.find(session_id)
    if session is None:
        return None
    record = await context_of(request).store.fetch(session.key_id)
    if (
        record is None
        or record.status(time.time()) not in _LIVE_STATUSES
        or not is_admin(record.scopes)
    ):
        await sessions.end(session_id)
        return None
    return session


def _refusal_page(request: web.Request, exc: Rejected) -> web.Response:
    response = render(
        request,
        "error.html",
        {"status": exc.status, "title": exc.title, "detail": exc.detail},
        status=exc.status,
    )
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


class _Failed(Rejected):
    status = 500
    title = "Internal error"
