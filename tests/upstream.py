"""A real upstream for the tests, with paths that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Seen:
    method: str
    path: str
    headers: CIMultiDict[str]  # as received: case-insensitive, repeated headers kept
    body: bytes
    raw_target: str = ""  # the request target as received (aiohttp's `raw_path`)
    decoded_path: str = ""  # the path as aiohttp decodes it for routing (`request.path`)


@dataclass
class UpstreamServer:
    """A real HTTP server (not a mock): its handlers misbehave on demand."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)


async def _app(state: UpstreamServer) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.seen.append(
            Seen(
                request.method,
                request.path_qs,
                CIMultiDict(request.headers),
                body,
                raw_target=request.raw_path,
                decoded_path=request.path,
            )
        )
        # The misbehaving paths live under the tests' public route: /public/hang, /public/big, …
        tail = request.match_info["tail"].removeprefix("public/")
        if tail.startswith("status/"):
            return web.Response(status=int(tail.split("/")[1]), text="status")
        if tail == "hang":
            state.entered.set()
            await asyncio.sleep(3600)  # the proxy's timeout must end this
        if tail == "wait":
            # Held until the test releases it: a request "in flight" for as long as needed.
            state.entered.set()
            await state.release.wait()
            return web.Response(text="released")
        if tail == "reset":
            response = web.StreamResponse(headers={"Content-Length": "1000000"})
            await response.prepare(request)
            await response.write(b"x" * 1000)
            assert request.transport is not None
            request.transport.abort()
            return response
        if tail == "big":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"y" * 65536)
            await response.write_eof()
            return response
        if tail == "cookie":
            return web.Response(text="cookie", headers={"Set-Cookie": "session=s3cr3t; Path=/"})
        if tail == "hop-headers":
            # Hop-by-hop response headers the proxy must not pass on to its client.
            return web.Response(
                text="hop",
                headers={
                    "Connection": "keep-alive, X-Private",
                    "X-Private": "for the proxy only",
                    "Keep-Alive": "timeout=5",
                    "Proxy-Authenticate": "Basic",
                    "Trailer": "X-Checksum",
                    "Upgrade": "h2c",
                    "X-End-To-End": "kept",
                },
            )
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "body": body.decode("latin-1")},
            headers={"X-Upstream": "yes", "Connection": "X-Hop", "X-Hop": "hop"},
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@asynccontextmanager
async def start_upstream() -> AsyncIterator[UpstreamServer]:
    state = UpstreamServer(url="")
    # auto_decompress off: `seen` records bodies byte for byte, as the proxy sent them.
    runner = web.AppRunner(
        await _app(state), access_log=None, shutdown_timeout=0.5, auto_decompress=False
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()
