"""A second upstream with a parser of its own: a WSGI app on the standard library's wsgiref.

The aiohttp upstream in tests/upstream.py parses a request the way the sidecar does (the same
library). This one reads it the way a WSGI framework does: `http.server` parses the head,
`wsgiref` builds the environ (PATH_INFO percent-decoded as latin-1, every header as an
`HTTP_*` variable with `-` turned into `_`, repeated headers joined with a comma), and the
app records what a framework would get from it. It runs in a thread of its own, on
127.0.0.1 only.

wsgiref speaks HTTP/1.0 and closes the connection after each response, so the sidecar's
keep-alive pool never reuses a connection to it; it does not de-chunk request bodies either,
so the app does that itself, as gunicorn, uWSGI or waitress would before the app sees it.
"""

from __future__ import annotations

import asyncio
import json
import socketserver
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

MAX_BODY = 1 << 20
_POLL_S = 0.05  # how often serve_forever looks for shutdown(): the teardown waits this long


@dataclass(frozen=True)
class WsgiSeen:
    """What a WSGI framework is handed for one request."""

    method: str  # REQUEST_METHOD
    raw_uri: str  # the request target as http.server kept it (RAW_URI, as gunicorn names it)
    path_info: str  # PATH_INFO: percent-decoded once, each byte as one latin-1 character
    query_string: str
    http: dict[str, str]  # every HTTP_* variable
    content_type: str | None
    content_length: str | None
    header_lines: tuple[tuple[str, str], ...]  # the header lines as received, in order
    body: bytes


@dataclass
class WsgiUpstream:
    url: str
    seen: list[WsgiSeen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seen: WsgiSeen) -> None:
        with self._lock:
            self.seen.append(seen)

    def take(self) -> list[WsgiSeen]:
        with self._lock:
            taken, self.seen = self.seen, []
        return taken


def _dechunk(stream: IO[bytes]) -> bytes:
    """A chunked body read off the connection, bounded by MAX_BODY (trailers skipped)."""
    body = bytearray()
    while True:
        size_line = stream.readline(1024)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailer lines
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise ValueError("chunked body over the test upstream's limit")
        body += stream.read(size)
        stream.readline(16)  # the CRLF after the chunk


def _body(environ: dict[str, Any]) -> bytes:
    stream: IO[bytes] = environ["wsgi.input"]
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return _dechunk(stream)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return stream.read(min(length, MAX_BODY)) if length > 0 else b""


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _app(state: WsgiUpstream) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        seen = WsgiSeen(
            method=environ["REQUEST_METHOD"],
            raw_uri=environ["RAW_URI"],
            path_info=environ.get("PATH_INFO", ""),
            query_string=environ.get("QUERY_STRING", ""),
            http={k: v for k, v in environ.items() if k.startswith("HTTP_")},
            content_type=environ.get("CONTENT_TYPE"),
            content_length=environ.get("CONTENT_LENGTH"),
            header_lines=tuple(environ["RAW_HEADERS"]),
            body=_body(environ),
        )
        state.record(seen)
        payload = json.dumps({"method": seen.method, "path_info": seen.path_info}).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr; the raw target and header lines passed on in the environ."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ["RAW_URI"] = self.path
        environ["RAW_HEADERS"] = list(self.headers.items())
        return environ


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a connection the sidecar left open does not hold the teardown
    block_on_close = False


@asynccontextmanager
async def start_wsgi_upstream() -> AsyncIterator[WsgiUpstream]:
    state = WsgiUpstream(url="")
    server = make_server(
        "127.0.0.1", 0, _app(state), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": _POLL_S}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await asyncio.to_thread(thread.join, 5)
