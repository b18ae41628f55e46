"""What every page handler shares: the request's session (`SESSION`), the dashboard's parts
(`DASHBOARD`), and `render`, which hands a template the session, its CSRF token and the scopes
the navigation and the forms are shown for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from sidecar.admin.auth import caller_ip
from sidecar.admin.context import CALLER, CONTEXT, REQUEST_ID, AdminContext
from sidecar.dashboard.sessions import Session, SessionStore
from sidecar.errors import MissingScope


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The dashboard's own parts, beside the admin API's `AdminContext`."""

    sessions: SessionStore


DASHBOARD = web.AppKey("dashboard", Dashboard)
SESSION = web.RequestKey("dashboard_session", Session)  # set by the gate for signed-in pages


def context_of(request: web.Request) -> AdminContext:
    """The admin listener's shared parts."""
    return request.app[CONTEXT]


def session_of(request: web.Request) -> Session:
    """The signed-in session (the gate let the request through only with one)."""
    return request[SESSION]


def sign_in_caller(request: web.Request, session: Session) -> None:
    """Make the session's key the request's caller, as the API's Bearer check does: the key
    handlers' admin events then name it as their actor."""
    request[CALLER] = session.caller(
        caller_ip(request, context_of(request)), request.get(REQUEST_ID, "")
    )


def require(request: web.Request, scope: str) -> None:
    """403 unless the session's key holds `scope`."""
    if scope not in session_of(request).scopes:
        raise MissingScope(f"this page needs a key with scope {scope}", [scope])


def render(
    request: web.Request, template: str, values: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """The page `template`, autoescaped, with the session's name, scopes and CSRF token."""
    session = request.get(SESSION)
    page: dict[str, Any] = {
        "session": session,
        "csrf": session.csrf if session is not None else values.get("csrf", ""),
        "scopes": session.scopes if session is not None else (),
        "path": request.path,
        **values,
    }
    return aiohttp_jinja2.render_template(template, request, page, status=status)


def see_other(location: str) -> web.Response:
    """303 to `location` (returned, not raised: the admin app's outer middleware turns raised
    HTTP exceptions into problem+json, which a browser should not be shown)."""
    return web.Response(status=303, headers={"Location": location})
