"""The upstream every target forwards to: reads the request body, answers ~1 KiB of JSON.

Run as its own process: `python -m bench.upstream --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from bench.payloads import RESPONSE_BODY


async def answer(request: web.Request) -> web.Response:
    await request.read()  # a real service reads what it is sent
    return web.Response(body=RESPONSE_BODY, content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed, as `sidecar serve` does, so no target gets a faster loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def serve_forever(app: web.Application, port: int, **site_options: Any) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, **site_options)
    await site.start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_on_fastest_loop(serve_forever(create_app(), args.port))


if __name__ == "__main__":
    main()
