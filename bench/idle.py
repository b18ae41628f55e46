"""Idle TLS connections: open N, send one authenticated GET on each, then keep them idle.

One request first because a connection that never sends its header block is cut after
`limits.header_timeout_s` (the slowloris guard); a keep-alive connection that has been
used and now waits is the idle state that costs memory in production.

Run as its own process: it writes `{"open": n, "failed": m}` to --result once all are
open, holds them until SIGTERM (or --max-seconds), then closes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
from collections import Counter
from pathlib import Path

from bench.upstream import run_on_fastest_loop

_CONCURRENT_OPENS = 50
_OPEN_TIMEOUT_S = 30.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        for _ in range(10_000):  # bounded: a 1 KiB body comes in a handful of chunks
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _open_one(
    port: int, context: ssl.SSLContext, request: bytes
) -> tuple[asyncio.StreamWriter | None, str]:
    try:
        async with asyncio.timeout(_OPEN_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
            writer.write(request)
            await writer.drain()
            status = await _read_response(reader)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        return None, type(exc).__name__
    return writer, str(status)


async def _main(args: argparse.Namespace, key: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    context = ssl.create_default_context(cafile=args.cafile)
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: localhost:{args.port}\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    outcomes: Counter[str] = Counter()
    slots = asyncio.Semaphore(_CONCURRENT_OPENS)

    async def open_one() -> None:
        async with slots:
            writer, outcome = await _open_one(args.port, context, request)
        outcomes[outcome] += 1
        if writer is not None:
            writers.append(writer)

    try:
        await asyncio.gather(*(open_one() for _ in range(args.count)))
        result = {"open": len(writers), "outcomes": dict(outcomes)}
        await asyncio.to_thread(Path(args.result).write_text, json.dumps(result))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="hold idle TLS keep-alive connections")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--path", default="/v1/orders/idle")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    key = Path(args.key_file).read_text().strip()
    run_on_fastest_loop(_main(args, key))


if __name__ == "__main__":
    main()
