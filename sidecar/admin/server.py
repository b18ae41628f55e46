"""The admin API's aiohttp application: `create_admin_app(context, endpoints)`.

Every endpoint is declared once (method, path, scope, handler; `sidecar.admin.endpoints`) and
registered from that declaration here, so the scope a route demands is the one its
declaration (and the OpenAPI document made from it) states.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar.admin.auth import authenticate_admin
from sidecar.admin.context import CONTEXT, REQUEST_ID, AdminContext
from sidecar.errors import InternalError, MethodNotAllowed, NotFound, Rejected
from sidecar.proxy.headers import REQUEST_ID_HEADER, request_id
from sidecar.proxy.problems import problem_response

log = structlog.get_logger("sidecar.admin")

AdminHandler = Callable[[web.Request, AdminContext], Awaitable[web.StreamResponse]]


class Endpoint(Protocol):
    """What the server reads of an endpoint declaration (the declarations carry more: the
    summary, parameters and schemas OpenAPI is made from)."""

    @property
    def method(self) -> str:
        """The HTTP method."""

    @property
    def path(self) -> str:
        """The route, e.g. `/admin/v1/keys/{name}`."""

    @property
    def scope(self) -> str | None:
        """The scope a caller needs; None: no key at all (`openapi.json`)."""

    @property
    def handler(self) -> AdminHandler:
        """Answers the request, given the admin context."""


ENDPOINT = web.AppKey("admin_endpoints", dict)  # route → its declaration, for the scope check


def create_admin_app(
    context: AdminContext,
    endpoints: Iterable[Endpoint],
    *,
    security_headers: Mapping[str, str],
) -> web.Application:
    """The admin application: one route per endpoint, behind the middlewares below.

    Order: `_problems` outermost, so every error — a 404 from the router, a 403 from the scope
    check, a handler's bug — leaves as problem+json carrying the request id; then `_auth`,
    which needs the route the router matched to know the scope it demands."""
    app = web.Application(middlewares=[_problems, _auth], client_max_size=64 * 1024)
    app[CONTEXT] = context
    declared: dict[web.AbstractRoute, Endpoint] = {}
    for endpoint in endpoints:
        route = app.router.add_route(endpoint.method, endpoint.path, _bind(endpoint, context))
        declared[route] = endpoint
    app[ENDPOINT] = declared
    headers = {**security_headers, "Cache-Control": "no-store"}

    async def decorate(request: web.Request, response: web.StreamResponse) -> None:
        # From the signal, not a middleware: streamed and error responses get them too.
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault(REQUEST_ID_HEADER, request.get(REQUEST_ID, ""))

    app.on_response_prepare.append(decorate)
    return app


def declared_endpoint(request: web.Request) -> Endpoint | None:
    """The declaration of the route `request` matched; None when it matched none."""
    endpoints: dict[web.AbstractRoute, Endpoint] = request.app[ENDPOINT]
    return endpoints.get(request.match_info.route)


def _bind(endpoint: Endpoint, context: AdminContext) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await endpoint.handler(request, context)

    return handle


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = request_id(request.headers.get(REQUEST_ID_HEADER))
    try:
        return await handler(request)
    except Rejected as exc:
        return problem_response(exc, request[REQUEST_ID])
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        refusal = MethodNotAllowed(
            f"{request.method} is not allowed here; use {allowed}", headers={"Allow": allowed}
        )
        return problem_response(refusal, request[REQUEST_ID])
    except web.HTTPNotFound:
        return problem_response(NotFound("no such admin endpoint"), request[REQUEST_ID])
    except web.HTTPException as exc:
        # Another of aiohttp's own (413 for a body over client_max_size, say): same shape.
        kind = type("HttpProblem", (Rejected,), {"status": exc.status, "title": exc.reason})
        return problem_response(kind(exc.reason), request[REQUEST_ID])
    except Exception:
        log.exception("admin handler failed", request_id=request[REQUEST_ID])
        failure = InternalError("the admin API failed to handle this request")
        return problem_response(failure, request[REQUEST_ID])


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = declared_endpoint(request)
    if endpoint is not None and endpoint.scope is not None:
        await authenticate_admin(request, request.app[CONTEXT], endpoint.scope)
    return await handler(request)
