"""The proxy port's request path, in the order of SPEC §2.

One handler for every request: an `Exchange` is made (request id, client address), `_serve`
runs the steps in order, then the audit record, one log line and the metrics are made from
the exchange. Every response leaves through `_decorate`, so each one carries
HSTS, `X-Request-Id` and `nosniff`; the parser-level 400s aiohttp builds itself get the same
headers in `sidecar.proxy.hardened`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import format_datetime

import structlog
from aiohttp import web

from sidecar.audit.events import EventLog, build_event
from sidecar.audit.exchange import Captures, Exchange
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
from sidecar.guard.shown import shown
from sidecar.keys.authenticator import Authenticator, Principal
from sidecar.keys.format import mask_keys
from sidecar.keys.scopes import is_admin
from sidecar.metrics import Metrics
from sidecar.proxy.bodies import Outgoing, prepare_request_body
from sidecar.proxy.headers import REQUEST_ID_HEADER, client_address, request_id
from sidecar.proxy.outcome import finish, keep, record_unanswered
from sidecar.proxy.paths import NonCanonicalPath, PathReading
from sidecar.proxy.problems import problem_response
from sidecar.proxy.routes import UNMATCHED, CompiledRoute, RouteTable, missing_scopes
from sidecar.proxy.screening import MisplacedKey, RequestScreen
from sidecar.proxy.upstream import UpstreamAborted, UpstreamClient

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLIENT_GONE = 499


@dataclass(slots=True)
class Lifecycle:
    """Where the process is in its shutdown; read by the pipeline and by /readyz."""

    draining: bool = False  # SIGTERM seen: not ready, ask clients to reconnect elsewhere
    closed: bool = False  # drain window over: answer what still arrives with 503


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
        """Answer one request: served, or refused with a problem; then recorded and logged."""
        peer = request.remote or ""
        client_ip, forwarded_for = client_address(
            peer, request.headers.getall("X-Forwarded-For", ()), self._trusted
        )
        path = request.rel_url.path
        exchange: Exchange[Principal] = Exchange(
            request_id=request_id(request.headers.get(REQUEST_ID_HEADER)),
            method=request.method,
            client_ip=client_ip,
            path=path,
            shown_path=shown(path, cards=self._guard.card_numbers != "off"),
            started=time.perf_counter(),
            route=UNMATCHED,
        )
        try:
            response = await self._serve(request, exchange, forwarded_for)
        except Rejected as exc:
            response = await self._refusal(exc, exchange)
        except (asyncio.CancelledError, ConnectionResetError):
            # The client went away: aiohttp cancels the handler, or writing to it fails. What
            # already reached the upstream is still recorded: 499, "client closed request".
            exchange.status = CLIENT_GONE
            record_unanswered(self._audit, exchange)
            finish(exchange, self._metrics, self._log)
            raise
        except UpstreamAborted as exc:
            if not exchange.recorded:
                exchange.status = 502
            exchange.aborted = str(exc)
            record_unanswered(self._audit, exchange)
            finish(exchange, self._metrics, self._log)
            raise
        except Exception:
            self._log.exception("unhandled error", request_id=exchange.request_id)
            failure = InternalError("the sidecar failed to handle this request")
            response = self._decorate(problem_response(failure, exchange.request_id), exchange)
        if not exchange.recorded:
            response = await self._keep_or_refuse(exchange, response)
        finish(exchange, self._metrics, self._log)
        return response

    async def _refusal(self, exc: Rejected, exchange: Exchange[Principal]) -> web.StreamResponse:
        """The problem response for `exc`, once its event (if it has one) is durable."""
        exchange.reason = exc.event or exc.detail
        if exc.event is not None:
            try:
                await self._events.emit(build_event(exchange, exc))
            except Unavailable as unavailable:
                exc = unavailable  # SPEC §17: no refusal answered without its event kept
        return self._decorate(problem_response(exc, exchange.request_id), exchange)

    async def _keep_or_refuse(
        self, exchange: Exchange[Principal], response: web.StreamResponse
    ) -> web.StreamResponse:
        """A response the proxy made itself (not yet sent): sent only once its record is
        durable; a 503 instead when the record cannot be kept."""
        exchange.status = response.status
        try:
            await keep(self._audit, exchange, response)
        except Unavailable as exc:
            response = self._decorate(problem_response(exc, exchange.request_id), exchange)
            exchange.status = response.status
        return response

    async def _serve(
        self, request: web.BaseRequest, exchange: Exchange[Principal], forwarded_for: str
    ) -> web.StreamResponse:
        """The steps of SPEC §2 in order: each adds to `exchange` or raises `Rejected`."""
        self._refuse_when_closed()
        self._screen.screen_head(request)
        reading = self._screen.read(request)
        await self._refuse_misplaced_key(self._screen.misplaced_key(request, reading), exchange)
        route = self._route(request, reading)
        await self._limit_unauthenticated(route, exchange)
        route = self._refuse_unrouted(route, exchange)
        if not route.public:
            await self._authenticate(request, exchange)
            await self._authorize(route, exchange)
        self._admit_to_audit(request, exchange)
        outgoing = await self._prepare_body(request, route, exchange)
        return await self._forward(request, exchange, outgoing, forwarded_for)

    def _refuse_when_closed(self) -> None:
        """After the drain window, answer whatever still arrives with 503."""
        if self._lifecycle.closed:
            raise Draining("the sidecar is shutting down; retry", retry_after=1)

    def _route(self, request: web.BaseRequest, reading: PathReading) -> CompiledRoute | None:
        """The route every reading of the path selects (None: no route); 400 when they differ."""
        try:
            return self._routes.match_reading(request.method, reading)
        except NonCanonicalPath as exc:
            raise BadRequest(str(exc)) from None

    async def _limit_unauthenticated(
        self, route: CompiledRoute | None, exchange: Exchange[Principal]
    ) -> None:
        """A public route, or none, counts against `rate_limits.unauthenticated_per_ip`."""
        if route is None or route.public:
            await self._auth.check_unauthenticated(exchange.client_ip)

    def _refuse_unrouted(
        self, route: CompiledRoute | None, exchange: Exchange[Principal]
    ) -> CompiledRoute:
        """403 without a route; with one, its label names the exchange in logs and metrics."""
        if route is None:
            raise NoRoute("no route matches this method and path")
        exchange.route = route.label
        return route

    async def _authenticate(self, request: web.BaseRequest, exchange: Exchange[Principal]) -> None:
        """The presented key, verified: the exchange's principal, or 401. An admin key (any
        `sidecar:` scope) is refused here: it is for the admin port only (SPEC §16)."""
        presented = self._presented_key(request)
        principal = await self._auth.authenticate(presented, exchange.client_ip)
        if is_admin(principal.scopes):
            raise AuthenticationFailed(
                "an admin key is not accepted on the proxy port",
                event="admin_key_on_proxy",
                key_id=principal.key_id,
                key_name=principal.name,
            )
        exchange.principal = principal

    async def _authorize(self, route: CompiledRoute, exchange: Exchange[Principal]) -> None:
        """The key's scopes must cover the route's (403), and its rate limit must allow it."""
        principal = exchange.principal
        assert principal is not None, "authorize follows authenticate"
        missing = missing_scopes(principal.scopes, route.scopes)
        if missing:
            raise MissingScope(f"the key lacks scope {' '.join(missing)}", missing)
        await self._auth.check_rate(principal)

    def _admit_to_audit(self, request: web.BaseRequest, exchange: Exchange[Principal]) -> None:
        """SPEC §2.9: nothing reaches the upstream unless its audit record can be kept."""
        if not self._audit.ready():
            raise Unavailable("the audit trail cannot take records right now", retry_after=5)
        limit = self._capture_limit
        exchange.captures = Captures(limit, BodyCapture(limit), BodyCapture(limit))
        exchange.query = request.rel_url.query_string
        exchange.request_headers = request.headers.items()

    async def _prepare_body(
        self, request: web.BaseRequest, route: CompiledRoute, exchange: Exchange[Principal]
    ) -> Outgoing:
        """The body to forward, past the data guard and the route's `map`; a key in a form
        field is refused."""
        captures = exchange.captures
        assert captures is not None, "the body is prepared once the exchange is audited"
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
        return outgoing

    async def _forward(
        self,
        request: web.BaseRequest,
        exchange: Exchange[Principal],
        outgoing: Outgoing,
        forwarded_for: str,
    ) -> web.StreamResponse:
        """Send the request upstream with the sidecar's headers; its answer streams back."""
        captures = exchange.captures
        assert captures is not None, "only an audited exchange is forwarded"
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
            seal=lambda response, upstream_s: self._seal(exchange, response, upstream_s),
        )
        return forwarded.response

    async def _seal(
        self, exchange: Exchange[Principal], response: web.StreamResponse, upstream_s: float
    ) -> None:
        """Called by the forwarder with the upstream's whole answer read and its end not yet
        sent: the client's copy is complete only once the record is durable."""
        exchange.upstream_seconds = upstream_s
        exchange.status = response.status
        await keep(self._audit, exchange, response)

    def _response_headers(self, exchange: Exchange[Principal]) -> dict[str, str]:
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

    async def _refuse_misplaced_key(
        self, misplaced: MisplacedKey | None, exchange: Exchange[Principal]
    ) -> None:
        """SPEC §14: refused, and the key flagged `exposed` only once its secret verifies."""
        if misplaced is None:
            return
        exchange.shown_path = mask_keys(exchange.shown_path)
        exchange.exposed_key_id = await self._auth.flag_exposed(
            misplaced.presented, exchange.client_ip
        )
        raise misplaced.refusal

    def _decorate(
        self, response: web.StreamResponse, exchange: Exchange[Principal]
    ) -> web.StreamResponse:
        response.headers.update(self._response_headers(exchange))
        if self._lifecycle.draining:
            response.force_close()
        return response
