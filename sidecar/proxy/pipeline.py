"""The proxy port's request path, in the order of SPEC §2.

One handler for every request: request id, limits, route, (authentication), forward, then
one log line and the metrics. Every response leaves through `_decorate`, so each one carries
HSTS, `X-Request-Id` and `nosniff`; the parser-level 400s aiohttp builds itself get the same
headers in `sidecar.proxy.hardened`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.utils import format_datetime

import structlog
from aiohttp import web

from sidecar.audit.events import EventLog, bounded, build_event
from sidecar.audit.record import BodyCapture
from sidecar.audit.trail import AuditTrail
from sidecar.config import Settings
from sidecar.errors import (
    AuthenticationFailed,
    BadRequest,
    Draining,
    InternalError,
    MissingScope,
    NoRoute,
    Rejected,
    Unavailable,
)
from sidecar.keys.authenticator import Authenticator, Principal
from sidecar.keys.format import mask_keys
from sidecar.metrics import Metrics
from sidecar.proxy.bodies import Captures, prepare_request_body
from sidecar.proxy.headers import (
    REQUEST_ID_HEADER,
    client_address,
    request_id,
)
from sidecar.proxy.paths import NonCanonicalPath
from sidecar.proxy.problems import problem_response
from sidecar.proxy.routes import UNMATCHED, RouteTable, missing_scopes
from sidecar.proxy.screening import MisplacedKey, RequestScreen
from sidecar.proxy.upstream import UpstreamAborted, UpstreamClient

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLIENT_GONE = 499


@dataclass(slots=True)
class Lifecycle:
    """Where the process is in its shutdown; read by the pipeline and by /readyz."""

    draining: bool = False  # SIGTERM seen: not ready, ask clients to reconnect elsewhere
    closed: bool = False  # drain window over: answer what still arrives with 503


@dataclass(slots=True)
class Exchange:
    """What one request accumulates on its way through, for the log line and metrics."""

    request_id: str
    client_ip: str
    shown_path: str  # for events and the log line: bounded, keys masked
    route: str = UNMATCHED
    principal: Principal | None = None
    captures: Captures | None = None  # set once the request is to be audited
    status: int = 500
    upstream_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Pipeline:
    """The proxy port's handler (`handle`), built once by `sidecar.runtime.app`."""

    def __init__(
        self,
        settings: Settings,
        *,
        routes: RouteTable,
        upstream: UpstreamClient,
        authenticator: Authenticator,
        events: EventLog,
        audit: AuditTrail,
        metrics: Metrics,
        lifecycle: Lifecycle,
        security_headers: dict[str, str],
    ) -> None:
        self._routes = routes
        self._upstream = upstream
        self._auth = authenticator
        self._events = events
        self._audit = audit
        self._guard = settings.data_guard
        self._capture_limit = settings.audit.max_body_bytes
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._security_headers = security_headers
        self._trusted = tuple(settings.trusted_proxies)
        self._max_body = settings.limits.max_body_bytes
        self._body_timeout_s = settings.limits.body_timeout_s
        self._key_header = settings.keys.header
        self._screen = RequestScreen(settings)
        self._log = structlog.get_logger("sidecar.request")

    def replace_routes(self, routes: RouteTable) -> None:
        """SIGHUP: requests already routed keep their route; new ones use the new table."""
        self._routes = routes

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        peer = request.remote or ""
        client_ip, forwarded_for = client_address(
            peer, request.headers.getall("X-Forwarded-For", ()), self._trusted
        )
        exchange = Exchange(
            request_id=request_id(request.headers.get(REQUEST_ID_HEADER)),
            client_ip=client_ip,
            shown_path=bounded(request.rel_url.path),
        )
        try:
            response = await self._serve(request, exchange, forwarded_for)
        except Rejected as exc:
            response = self._decorate(problem_response(exc, exchange.request_id), exchange)
            exchange.extra["reason"] = exc.event or exc.detail
            if exc.event is not None:
                self._emit(request, exchange, exc)
        except (asyncio.CancelledError, ConnectionResetError):
            # The client went away: aiohttp cancels the handler, or writing to it fails. What
            # already reached the upstream is still recorded: 499, "client closed request".
            exchange.status = CLIENT_GONE
            self._record(request, exchange, None, started)
            self._finish(request, exchange, started)
            raise
        except UpstreamAborted as exc:
            exchange.status = 502
            exchange.extra["aborted"] = str(exc)
            self._record(request, exchange, None, started)
            self._finish(request, exchange, started)
            raise
        except Exception:
            self._log.exception("unhandled error", request_id=exchange.request_id)
            failure = InternalError("the sidecar failed to handle this request")
            response = self._decorate(problem_response(failure, exchange.request_id), exchange)
        exchange.status = response.status
        self._record(request, exchange, response, started)
        self._finish(request, exchange, started)
        return response

    async def _serve(
        self, request: web.BaseRequest, exchange: Exchange, forwarded_for: str
    ) -> web.StreamResponse:
        client_ip = exchange.client_ip
        if self._lifecycle.closed:
            raise Draining("the sidecar is shutting down; retry", retry_after=1)
        reading = self._screen.read(request)
        misplaced = self._screen.misplaced_key(request, reading)
        if misplaced is not None:
            await self._refuse_misplaced_key(misplaced, exchange)

        try:
            route = self._routes.match_reading(request.method, reading)
        except NonCanonicalPath as exc:
            raise BadRequest(str(exc)) from None
        if route is None or route.public:
            await self._auth.check_unauthenticated(client_ip)
        if route is None:
            raise NoRoute("no route matches this method and path")
        exchange.route = route.label
        if not route.public:
            principal = await self._auth.authenticate(self._presented_key(request), client_ip)
            exchange.principal = principal
            missing = missing_scopes(principal.scopes, route.scopes)
            if missing:
                raise MissingScope(f"the key lacks scope {' '.join(missing)}", missing)
            await self._auth.check_rate(principal)

        # SPEC §2.9: nothing reaches the upstream unless its audit record can be kept.
        if not self._audit.ready():
            raise Unavailable("the audit trail cannot take records right now", retry_after=5)
        limit = self._capture_limit
        captures = Captures(limit, BodyCapture(limit), BodyCapture(limit))
        exchange.captures = captures

        if request.headers.get("Expect", "").lower() == "100-continue" and request.body_exists:
            # Only now, with the request accepted, ask the client for its body.
            await request.writer.write(_CONTINUE)
        outgoing = await prepare_request_body(
            request,
            route.map,
            guard=self._guard,
            max_body=self._max_body,
            body_timeout_s=self._body_timeout_s,
            captures=captures,
        )
        if outgoing.misplaced_key is not None:
            exchange.captures = None  # refused before forwarding: an event, not a record
            await self._refuse_misplaced_key(outgoing.misplaced_key, exchange)
        headers = self._screen.headers.forward(
            request.headers.items(), request.headers.getall("Connection", ())
        )
        if outgoing.rewritten:
            headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
        headers += [
            ("Host", self._upstream.host_header),
            ("X-Forwarded-For", forwarded_for),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", request.headers.get("Host", "")),
            (REQUEST_ID_HEADER, exchange.request_id),
        ]
        if exchange.principal is not None:
            headers += [
                ("X-Sidecar-Key-Name", exchange.principal.name),
                ("X-Sidecar-Key-Id", exchange.principal.key_id),
                ("X-Sidecar-Scopes", " ".join(exchange.principal.scopes)),
            ]
        forwarded = await self._upstream.forward(
            request,
            headers=headers,
            body=outgoing.body,
            response_headers=self._response_headers(exchange),
            close=self._lifecycle.draining,
            capture=captures.response,
        )
        exchange.upstream_seconds = forwarded.upstream_seconds
        return forwarded.response

    def _response_headers(self, exchange: Exchange) -> dict[str, str]:
        headers = {**self._security_headers, REQUEST_ID_HEADER: exchange.request_id}
        if exchange.principal is not None and exchange.principal.sunset is not None:
            # RFC 8594: tell the client before its key starts failing.
            headers["Sunset"] = format_datetime(exchange.principal.sunset, usegmt=True)
        return headers

    def _presented_key(self, request: web.BaseRequest) -> str | None:
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if self._key_header is not None:
            value = request.headers.get(self._key_header)
            if value:
                return value.strip()
        return None

    async def _refuse_misplaced_key(self, misplaced: MisplacedKey, exchange: Exchange) -> None:
        """SPEC §14: refused, and the key flagged `exposed` only once its secret verifies."""
        exchange.shown_path = mask_keys(exchange.shown_path)
        key_id = await self._auth.flag_exposed(misplaced.presented, exchange.client_ip)
        if key_id is not None:
            exchange.extra["key_id"] = key_id
        raise misplaced.refusal

    def _emit(self, request: web.BaseRequest, exchange: Exchange, exc: Rejected) -> None:
        assert exc.event is not None
        key_id: str | None = None
        key_name: str | None = None
        if isinstance(exc, AuthenticationFailed):
            key_id, key_name = exc.key_id, exc.key_name
        elif exchange.principal is not None:
            key_id, key_name = exchange.principal.key_id, exchange.principal.name
        elif isinstance(exchange.extra.get("key_id"), str):
            key_id = str(exchange.extra["key_id"])
        self._events.emit(
            build_event(
                exc.event,
                request_id=exchange.request_id,
                method=request.method,
                path=exchange.shown_path,
                client_ip=exchange.client_ip,
                detail=exc.detail,
                key_id=key_id,
                key_name=key_name,
            )
        )

    def _decorate(self, response: web.StreamResponse, exchange: Exchange) -> web.StreamResponse:
        response.headers.update(self._response_headers(exchange))
        if self._lifecycle.draining:
            response.force_close()
        return response

    def _record(
        self,
        request: web.BaseRequest,
        exchange: Exchange,
        response: web.StreamResponse | None,
        started: float,
    ) -> None:
        """The audit record of an exchange that passed routing and authorization."""
        captures = exchange.captures
        if captures is None:
            return
        exchange.extra.update(captures.notes)
        if isinstance(response, web.Response) and response.body is not None:
            # The proxy answered itself (413, 422, 502, 504…): record what it said.
            captures.response.feed(bytes(response.body))  # type: ignore[arg-type]
        principal = exchange.principal
        path, query = request.rel_url.path, request.rel_url.query_string
        if principal is None:
            # Anyone may send these (a public route): what one request may store is bounded.
            path, query = bounded(path), bounded(query)
        self._audit.record(
            request_id=exchange.request_id,
            method=request.method,
            path=path,
            query=query,
            client_ip=exchange.client_ip,
            key_name=principal.name if principal else None,
            key_id=principal.key_id if principal else None,
            scopes=principal.scopes if principal else (),
            request_headers=list(request.headers.items()),
            raw_body=captures.request.result(),
            mapped_body=captures.mapped,
            status=exchange.status,
            response_headers=list(response.headers.items()) if response is not None else [],
            response_body=captures.response.result(),
            duration_ms=(time.perf_counter() - started) * 1000,
            upstream_ms=None
            if exchange.upstream_seconds is None
            else exchange.upstream_seconds * 1000,
            request_screened=captures.screened,
            request_inspected=captures.inspected,
        )

    def _finish(self, request: web.BaseRequest, exchange: Exchange, started: float) -> None:
        duration = time.perf_counter() - started
        self._metrics.requests.labels(exchange.route, str(exchange.status)).inc()
        self._metrics.request_duration.observe(duration)
        if exchange.upstream_seconds is not None:
            self._metrics.upstream_duration.observe(exchange.upstream_seconds)
        self._log.info(
            "request",
            request_id=exchange.request_id,
            method=request.method,
            path=exchange.shown_path,
            status=exchange.status,
            route=exchange.route,
            client_ip=exchange.client_ip,
            key_name=exchange.principal.name if exchange.principal else None,
            duration_ms=round(duration * 1000, 3),
            **exchange.extra,
        )
