"""The Python baseline: the least an aiohttp reverse proxy can do.

One catch-all route, TLS with the same certificate as the sidecar, one shared keep-alive
`ClientSession`, the request body streamed up and the response streamed back; no
authentication, no audit, no data guard, no logging. Whatever the sidecar costs beyond
this is the price of what it adds.

Run as its own process:
`python -m bench.naive_proxy --port N --upstream URL --cert-file F --key-file F`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bench.upstream import proxy_arguments, run_on_fastest_loop, serve_forever

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)

# RFC 9110 §7.6.1 hop-by-hop headers, plus Host (the client library sets the upstream's).
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_NOT_RETURNED = _NOT_FORWARDED | {"content-length"}  # StreamResponse frames the body itself


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED]
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.rel_url.raw_path_qs,
        headers=headers,
        data=request.content if request.body_exists else None,
        allow_redirects=False,
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _NOT_RETURNED:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    # The sidecar's upstream pool defaults: 100 keep-alive connections, no decompression.
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )
    yield
    await app[SESSION].close()


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    args, context = proxy_arguments("naive aiohttp TLS pass-through proxy")
    run_on_fastest_loop(serve_forever(create_app(args.upstream), args.port, ssl_context=context))


if __name__ == "__main__":
    main()
