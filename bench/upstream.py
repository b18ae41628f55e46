"""The upstream every target forwards to: reads the request body, answers ~1 KiB of JSON
(a small JSON document to a GET).

Run as its own process: `python -m bench.upstream --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from typing import Any

from aiohttp import web

from bench.payloads import RESPONSE_BODY, SMALL_RESPONSE_BODY

# The very loop choice `sidecar serve` makes (uvloop where installed), so no target gets a
# faster loop than another.
from sidecar.runtime.process import run_with_best_loop as run_on_fastest_loop

__all__ = ["create_app", "run_on_fastest_loop", "serve_forever"]


async def answer(request: web.Request) -> web.Response:
    await request.read()  # a real service reads what it is sent
    body = SMALL_RESPONSE_BODY if request.method == "GET" else RESPONSE_BODY
    return web.Response(body=body, content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def serve_forever(app: web.Application, port: int, **site_options: Any) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, **site_options)
    await site.start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


def proxy_arguments(description: str) -> tuple[argparse.Namespace, ssl.SSLContext]:
    """The command line every peer proxy takes (`--port --upstream --cert-file --key-file`),
    and its server TLS context (1.2 at least, the run's certificate)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert_file, args.key_file)
    return args, context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_on_fastest_loop(serve_forever(create_app(), args.port))


if __name__ == "__main__":
    main()
