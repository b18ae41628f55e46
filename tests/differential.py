"""The differential harness: one sidecar in front of each of two upstreams with different parsers.

`Harness` runs, on an event loop in a thread of its own, the aiohttp recording upstream
(tests/upstream.py), the wsgiref upstream (tests/wsgi_upstream.py), a sidecar in front of
each, and a key of scope `orders:read` issued at start-up. Tests call it synchronously, so
one harness serves a whole module, hypothesis examples included (hypothesis drives sync test
functions; function-scoped async fixtures would restart everything per example).

What the sidecar authorised is computed from the request as the client sent it, with the
sidecar's own pieces (`read_path`, `RouteTable`); what each upstream parsed is what it
recorded. `readings` lists the paths an upstream framework may route on: its own decoding,
decoded once more, `;parameters` removed, dot segments resolved, slashes merged, a trailing
slash dropped.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

import redis.asyncio as aioredis
from yarl import URL

from sidecar.config import Route, Settings
from sidecar.keys.store import NewKey
from sidecar.proxy.paths import NonCanonicalPath, read_path
from sidecar.proxy.routes import CompiledRoute, RouteTable
from sidecar.runtime.serve import Running, running
from sidecar.runtime.tls import check_certificate
from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import RawResponse, raw_tls_exchange
from tests.keysupport import issue, keys_section
from tests.upstream import Seen, UpstreamServer, start_upstream
from tests.wsgi_upstream import WsgiSeen, WsgiUpstream, start_wsgi_upstream

T = TypeVar("T")
Kind = Literal["aiohttp", "wsgi"]
KINDS: tuple[Kind, ...] = ("aiohttp", "wsgi")

ROUTES: list[dict[str, Any]] = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/orders/**", "methods": ["GET", "HEAD"], "scopes": ["orders:read"]},
    {"path": "/v1/orders/**", "methods": ["POST", "DELETE"], "scopes": ["orders:write"]},
    {"path": "/v1/admin", "scopes": ["admin:manage"]},
    {"path": "/v1/**", "public": True},
]
TABLE = RouteTable([Route(**route) for route in ROUTES], "deny")
KEY_NAME = "differential-reader"
KEY_SCOPES = ("orders:read",)
EXCHANGE_S = 5.0

# -- names as upstreams read them -----------------------------------------------------------------


def cgi_name(name: str) -> str:
    """The strictest reading of a header name an upstream applies: upper case, and every
    character that is not a letter or digit as `_` (lighttpd's CGI/FastCGI variables; PHP's
    variable registration turns `.` and spaces into `_` too). WSGI and Django turn `-` into
    `_`, which this includes."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


IDENTITY = {"X_SIDECAR_KEY_NAME", "X_SIDECAR_KEY_ID", "X_SIDECAR_SCOPES"}
OVERRIDES = {
    "X_HTTP_METHOD_OVERRIDE",
    "X_HTTP_METHOD",
    "X_METHOD_OVERRIDE",
    "X_ORIGINAL_URL",
    "X_REWRITE_URL",
    "X_ORIGINAL_METHOD",
}
CLIENT_ADDRESS = {
    "FORWARDED",
    "X_REAL_IP",
    "X_CLIENT_IP",
    "TRUE_CLIENT_IP",
    "X_CLUSTER_CLIENT_IP",
    "CF_CONNECTING_IP",
    "FASTLY_CLIENT_IP",
    "X_ORIGINATING_IP",
}

# -- what an upstream heard, in one form for both ---------------------------------------------


@dataclass(frozen=True)
class Heard:
    kind: Kind
    method: str
    raw_target: str  # the target on the upstream's wire
    decoded_path: str  # the path as the upstream's own parser decodes it
    headers: tuple[tuple[str, str], ...]  # the header lines, in order, names as sent
    environ: dict[str, str]  # WSGI's HTTP_* variables (empty for aiohttp)
    body: bytes


def _from_aiohttp(seen: Seen) -> Heard:
    return Heard(
        "aiohttp",
        seen.method,
        seen.raw_target,
        seen.decoded_path,
        tuple(seen.headers.items()),
        {},
        seen.body,
    )


def _from_wsgi(seen: WsgiSeen) -> Heard:
    # PATH_INFO holds one latin-1 character per decoded byte; routes are matched on text.
    path = seen.path_info.encode("latin-1").decode("utf-8", "replace")
    return Heard("wsgi", seen.method, seen.raw_uri, path, seen.header_lines, seen.http, seen.body)


# -- paths ----------------------------------------------------------------------------------------


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, as routers resolve a decoded path."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if path.endswith(("/.", "/..")):
        out.append("")
    return "/" + "/".join(out)


def _strip_parameters(path: str) -> str:
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def readings(heard: Heard) -> set[str]:
    """Every path an upstream framework behind this parser may route `heard` on."""
    raw_path = heard.raw_target.split("?", 1)[0]
    bases = {
        heard.decoded_path,
        unquote(heard.decoded_path),  # a second percent-decoding
        unquote(_strip_parameters(raw_path)),  # Tomcat: ;parameters off, then decoded
        _strip_parameters(heard.decoded_path),  # decoded, then ;parameters off
        _strip_parameters(unquote(heard.decoded_path)),
    }
    result: set[str] = set()
    for base in bases:
        for path in (base, _remove_dot_segments(base), re.sub("/{2,}", "/", base)):
            result.add(path)
            if len(path) > 1 and path.endswith("/"):
                result.add(path.rstrip("/"))
    return result


@dataclass(frozen=True)
class Authorised:
    """The sidecar's own view of a request: the path it routes on and the route chosen."""

    method: str
    path: str
    route: CompiledRoute | None


def sidecar_view(method: str, target: str) -> Authorised | None:
    """What the sidecar's route check sees for this request line; None when it must refuse
    the path (`read_path` or the readings' route check say no)."""
    if target.startswith("/"):
        raw_path = re.split(r"[?#]", target, maxsplit=1)[0]
    else:
        raw_path = URL(target, encoded=True).raw_path  # absolute-form, as aiohttp parses it
    try:
        reading = read_path(raw_path)
        route = TABLE.match_reading(method, reading)
    except NonCanonicalPath:
        return None
    return Authorised(method, reading.path, route)


def route_label(route: CompiledRoute | None) -> str:
    if route is None:
        return "(deny)"
    return f"{route.label} {sorted(route.methods or ['*'])} {'public' if route.public else ''}"


# -- the harness ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    answer: RawResponse
    heard: list[Heard]


class Harness:
    """Two upstreams, a sidecar in front of each, one key; driven from sync code."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client_ssl: ssl.SSLContext) -> None:
        self._loop = loop
        self._client_ssl = client_ssl
        self._stack = AsyncExitStack()
        self.aiohttp_upstream: UpstreamServer
        self.wsgi_upstream: WsgiUpstream
        self.proxies: dict[Kind, Running] = {}
        self.key: NewKey
        self.last_heard: Heard  # the upstream's record of the last request served

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def start(self, settings_for: dict[str, Any], redis_url: str) -> None:
        stack = self._stack
        self.aiohttp_upstream = await stack.enter_async_context(start_upstream())
        self.wsgi_upstream = await stack.enter_async_context(start_wsgi_upstream())
        for kind, url in (("aiohttp", self.aiohttp_upstream.url), ("wsgi", self.wsgi_upstream.url)):
            settings = Settings(**{**settings_for, "upstream": {"url": url, "timeout_s": 5}})
            proxy = await stack.enter_async_context(
                running(settings, check_certificate(settings.tls))
            )
            self.proxies[kind] = proxy  # type: ignore[index]
        client = aioredis.Redis.from_url(redis_url)
        stack.push_async_callback(client.aclose)
        self.key = await issue(
            client, self.proxies["aiohttp"].sidecar.settings, KEY_NAME, KEY_SCOPES
        )

    async def stop(self) -> None:
        await self._stack.aclose()

    def identity(self) -> dict[str, str]:
        """The identity headers the sidecar sets for the harness's key, as CGI names."""
        record = self.key.record
        return {
            "X_SIDECAR_KEY_NAME": record.name,
            "X_SIDECAR_KEY_ID": record.key_id,
            "X_SIDECAR_SCOPES": " ".join(record.scopes),
        }

    def exchange(self, kind: Kind, payload: bytes) -> Outcome:
        return self.run(self._exchange(kind, payload))

    async def _exchange(self, kind: Kind, payload: bytes) -> Outcome:
        self.aiohttp_upstream.seen.clear()
        self.wsgi_upstream.take()
        answer = await raw_tls_exchange(
            self.proxies[kind].proxy_port, payload, self._client_ssl, within=EXCHANGE_S
        )
        heard = [_from_aiohttp(seen) for seen in self.aiohttp_upstream.seen] + [
            _from_wsgi(seen) for seen in self.wsgi_upstream.take()
        ]
        if heard:
            self.last_heard = heard[-1]
        return Outcome(answer, heard)


def harness_settings(
    cert_files: tuple[Path, Path], redis_url: str, spool: Path, **overrides: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "listen": {"address": "127.0.0.1", "port": 0},
        "health": {"address": "127.0.0.1", "port": 0},
        "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
        "redis": {"url": redis_url},
        "audit": {"spool_dir": str(spool)},
        "shutdown": {"drain_s": 0, "grace_s": 2},
        "routes": ROUTES,
        "keys": keys_section(),
        # Hundreds of requests from 127.0.0.1 in a few seconds: no limit may decide a case.
        "rate_limits": {
            "per_key": None,
            "failed_auth_per_ip": None,
            "unauthenticated_per_ip": None,
        },
    }
    document.update(overrides)
    return document


@contextmanager
def harness_running(
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    client_ssl: ssl.SSLContext,
    spool: Path,
    **overrides: Any,
) -> Iterator[Harness]:
    if not redis_server.running:  # a fault test may have stopped it
        redis_server.start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="differential-loop", daemon=True)
    thread.start()
    harness = Harness(loop, client_ssl)
    try:
        harness.run(
            harness.start(
                harness_settings(cert_files, redis_server.url, spool, **overrides),
                redis_server.url,
            )
        )
        yield harness
    finally:
        try:
            harness.run(harness.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.run_until_complete(_drain(loop))
            loop.close()


async def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Let callbacks the stop left behind run, so closing the loop warns about nothing."""
    pending: list[Awaitable[Any]] = [
        task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()
    ]
    for task in pending:
        assert isinstance(task, asyncio.Task)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await loop.shutdown_asyncgens()
