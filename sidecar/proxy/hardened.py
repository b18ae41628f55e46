"""aiohttp's low-level server, with our headers on the responses aiohttp builds by itself.

aiohttp answers unparseable requests (smuggling attempts, bad chunking, garbage) with a 400
that it builds in `RequestHandler.handle_error`, bypassing every handler and signal. The
contract wants HSTS, `X-Request-Id` and `nosniff` on those too, so the handler class is
ours and adds them there.

aiohttp's own page for a parse error quotes the offending bytes, in the body and in an
error-level log line with a traceback; those bytes can be an `Authorization` header. Ours
says what kind of problem it was (problem+json) and logs the error class only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from sidecar.errors import BadRequest, HeaderTooLarge, Rejected
from sidecar.proxy.headers import REQUEST_ID_HEADER, request_id
from sidecar.proxy.problems import problem_response

log = structlog.get_logger("sidecar.protocol")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _parse_problem(exc: HttpProcessingError) -> Rejected:
    # The parser's message quotes request bytes: never pass it on.
    if isinstance(exc, LineTooLong):
        return HeaderTooLarge("a request header or the request line is too long")
    return BadRequest(f"malformed request ({type(exc).__name__}); it was not forwarded")


class _HardenedRequestHandler(RequestHandler):
    security_headers: Mapping[str, str] = {}
    header_timeout_s: float = 10.0
    max_connections: int = 10_000
    _head_timer: asyncio.TimerHandle | None = None

    # Slowloris: aiohttp has no deadline for receiving a request head, only the keep-alive
    # timer for idle connections. A connection gets `header_timeout_s` from its first byte
    # (or from its TLS handshake) to deliver a whole head, or it is closed.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self._manager.connections) > self.max_connections:  # type: ignore[union-attr]
            log.warning("connection refused: limits.max_connections reached")
            self.force_close()
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        before = len(self._messages)
        super().data_received(data)
        if len(self._messages) > before:
            self._disarm_head_timer()  # a whole head arrived
        elif self._head_timer is None and not self._request_in_progress and not self._messages:
            self._arm_head_timer()  # the first bytes of a new request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._messages and not self._request_in_progress:
            log.info("connection closed: request head not received in time")
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # The response is already on the wire: the only honest thing left is to cut the
            # connection, which aiohttp does on this exception.
            raise ConnectionError("response already started")
        identifier = request_id(None)  # the client's own id is in the unparsed headers
        if isinstance(exc, HttpProcessingError):
            problem = _parse_problem(exc)
            log.warning(
                "malformed request",
                request_id=identifier,
                client_ip=request.remote,
                status=problem.status,
                error=type(exc).__name__,
            )
            response: web.StreamResponse = problem_response(problem, identifier)
            response.force_close()  # framing is lost: nothing after this can be trusted
        else:
            response = super().handle_error(request, status, exc, message)
        response.headers.update(self.security_headers)
        response.headers[REQUEST_ID_HEADER] = identifier
        return response


class HardenedServer(web.Server):
    """`web.Server` whose connections add `security_headers` to aiohttp's own error pages."""

    def __init__(
        self,
        handler: Handler,
        *,
        security_headers: Mapping[str, str],
        header_timeout_s: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._security_headers = security_headers
        self._header_timeout_s = header_timeout_s
        self._max_connections = max_connections

    def __call__(self) -> RequestHandler:
        connection = _HardenedRequestHandler(self, loop=self._loop, **self._kwargs)
        connection.security_headers = self._security_headers
        connection.header_timeout_s = self._header_timeout_s
        connection.max_connections = self._max_connections
        return connection


class HardenedAppRunner(web.AppRunner):
    """`web.AppRunner` serving its application through `HardenedServer`'s connections.

    The admin listener needs the same protocol as the proxy port: aiohttp's stock one echoes a
    malformed header line (an `Authorization: Bearer <admin key>`) in its 400 page and its error
    log, sends that page without HSTS, and waits forever for a request head (slowloris)."""

    def __init__(
        self,
        app: web.Application,
        *,
        security_headers: Mapping[str, str],
        header_timeout_s: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._hardening: dict[str, Any] = {
            "security_headers": security_headers,
            "header_timeout_s": header_timeout_s,
            "max_connections": max_connections,
        }

    async def _make_server(self) -> web.Server:
        # What `AppRunner._make_server` and `Application._make_handler` do, with our server.
        loop = asyncio.get_running_loop()
        app = self.app
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        return HardenedServer(
            app._handle,  # type: ignore[arg-type]
            request_factory=app._make_request,
            loop=loop,
            debug=False,
            **self._hardening,
            **self._kwargs,
        )
