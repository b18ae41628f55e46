"""`install_dashboard(app)`: the dashboard's pages, static files, templates and headers on
the admin listener's application, beside the admin API (which keeps `/admin/v1/`)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from sidecar.admin.context import CONTEXT
from sidecar.dashboard import activity, audit, keys, signin
from sidecar.dashboard.charts import format_count
from sidecar.dashboard.gate import gate
from sidecar.dashboard.rendering import DASHBOARD, Dashboard, see_other
from sidecar.dashboard.sessions import SessionStore

HERE = Path(__file__).parent
# SPEC §16: no inline script, no asset from another origin, never framed. `style-src 'self'`
# too: the pages' look is the one stylesheet, so an injected style attribute does nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # for browsers older than frame-ancestors
    "Referrer-Policy": "no-referrer",  # page URLs hold filters: key names, addresses
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def _home(request: web.Request) -> web.StreamResponse:
    return see_other("/activity")


def install_dashboard(app: web.Application) -> None:
    """Add the dashboard to the admin `app` (built by `create_admin_app`, not yet started)."""
    context = app[CONTEXT]
    app[DASHBOARD] = Dashboard(SessionStore(context.redis, context.settings.admin.session_ttl_s))
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page quietly
    )
    environment.filters["count"] = format_count
    app.middlewares.append(gate)  # innermost: after the admin app's request id
    app.router.add_get("/", _home)
    app.router.add_get("/login", signin.login_page)
    app.router.add_post("/login", signin.login)
    app.router.add_post("/logout", signin.logout)
    activity.add_routes(app.router)
    keys.add_routes(app.router)
    audit.add_routes(app.router)
    app.router.add_static("/static/", HERE / "static")

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)

    app.on_response_prepare.append(headers)
