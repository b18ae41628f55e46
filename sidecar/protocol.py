"""aiohttp's low-level server, with our headers on the responses aiohttp builds by itself.

aiohttp answers unparseable requests (smuggling attempts, bad chunking, garbage) with a 400
that it builds in `RequestHandler.handle_error`, bypassing every handler and signal. The
contract wants HSTS, `X-Request-Id` and `nosniff` on those too, so the handler class is
ours and adds them there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sidecar.headers import REQUEST_ID_HEADER, request_id

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _HardenedRequestHandler(RequestHandler):
    security_headers: Mapping[str, str] = {}

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
        response = super().handle_error(request, status, exc, message)
        response.headers.update(self.security_headers)
        response.headers[REQUEST_ID_HEADER] = request_id(None)
        return response


class HardenedServer(web.Server):
    """`web.Server` whose connections add `security_headers` to aiohttp's own error pages."""

    def __init__(
        self, handler: Handler, *, security_headers: Mapping[str, str], **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._security_headers = security_headers

    def __call__(self) -> RequestHandler:
        connection = _HardenedRequestHandler(self, loop=self._loop, **self._kwargs)
        connection.security_headers = self._security_headers
        return connection
