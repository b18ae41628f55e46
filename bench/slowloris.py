"""Slowloris: hold N TLS connections that each send a partial request head, then one more
header byte every ~2 s, and never finish it.

The sidecar gives a connection `limits.header_timeout_s` (from its TLS handshake) to deliver
a whole head, then closes it. Each slot here reconnects as soon as it is cut, so N stay open,
as a patient attacker would keep them. Opens are spread over --ramp-seconds (the harness
passes the header timeout) so that the cuts, and the reconnects, come in a steady stream
rather than in one wave.

Run as its own process, 127.0.0.1 only, at most 50 handshakes at a time. It writes
`{"open": n, "reconnects": m, …}` to --result once N are open (or when --open-deadline
passes), and rewrites it with the final counts when it stops (SIGTERM or --max-seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.upstream import run_on_fastest_loop

_CONCURRENT_OPENS = 50
_OPEN_TIMEOUT_S = 10.0
_BYTE_INTERVAL_S = 2.0
_RETRY_PAUSE_S = 0.5
_HEAD = b"GET /v1/orders/x HTTP/1.1\r\nHost: localhost\r\n"
# The trickle: an endless run of short header lines, one byte at a time. A line is never the
# empty one, so the head never ends.
_TRICKLE = b"X-Slow: a\r\n"


class Slowloris:
    def __init__(self, port: int, cafile: str, count: int) -> None:
        self._port = port
        self._context = ssl.create_default_context(cafile=cafile)
        self._count = count
        self._slots = asyncio.Semaphore(_CONCURRENT_OPENS)
        self.open = 0
        self.opened = 0  # successful opens, first ones included
        self.reconnects = 0  # opens after the server cut this slot's previous connection
        self.server_closed = 0  # connections the server closed (the slowloris guard)
        self.answered = 0  # of those, how many got some bytes (an error page) first
        self.open_failures: Counter[str] = Counter()
        self.lifetimes: list[float] = []  # seconds from open to the server's cut
        self.bytes_trickled = 0
        self.all_open = asyncio.Event()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with self._slots:
            try:
                async with asyncio.timeout(_OPEN_TIMEOUT_S):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", self._port, ssl=self._context, server_hostname="localhost"
                    )
                    writer.write(_HEAD)
                    await writer.drain()
            except (OSError, TimeoutError) as exc:
                self.open_failures[type(exc).__name__] += 1
                return None
        return reader, writer

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Trickle bytes until the server closes the connection (returns) or we stop (cancel)."""
        position = 0
        got_bytes = False
        # A random first delay so that the slots' writes do not all fall on the same tick.
        delay = random.uniform(0.1, _BYTE_INTERVAL_S)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=delay)
            except TimeoutError:
                data = None
            except OSError:  # reset, or a TLS error on a cut connection
                break
            if data == b"":
                break  # EOF: the server closed it
            if data:
                got_bytes = True  # an answer (say a 408): keep reading until the EOF
                delay = _BYTE_INTERVAL_S
                continue
            try:
                writer.write(_TRICKLE[position : position + 1])
                await writer.drain()
            except OSError:
                break
            position = (position + 1) % len(_TRICKLE)
            self.bytes_trickled += 1
            delay = random.uniform(0.9, 1.1) * _BYTE_INTERVAL_S
        if got_bytes:
            self.answered += 1

    async def slot(self, start_after: float, deadline: float) -> None:
        await asyncio.sleep(start_after)
        first = True
        while time.monotonic() < deadline:
            connection = await self._connect()
            if connection is None:
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            reader, writer = connection
            self.opened += 1
            if not first:
                self.reconnects += 1
            first = False
            self.open += 1
            if self.open >= self._count:
                self.all_open.set()
            opened_at = time.monotonic()
            try:
                await self._hold(reader, writer)
                self.server_closed += 1
                self.lifetimes.append(time.monotonic() - opened_at)
            finally:
                self.open -= 1
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    def summary(self, seconds: float, final: bool) -> dict[str, Any]:
        lifetimes = sorted(self.lifetimes)
        return {
            "wanted": self._count,
            "open": self.open,
            "opened": self.opened,
            "reconnects": self.reconnects,
            "server_closed": self.server_closed,
            "answered_before_close": self.answered,
            "open_failures": dict(self.open_failures),
            "lifetime_s": {
                "min": round(lifetimes[0], 2),
                "median": round(statistics.median(lifetimes), 2),
                "max": round(lifetimes[-1], 2),
            }
            if lifetimes
            else None,
            "bytes_trickled": self.bytes_trickled,
            "seconds": round(seconds, 2),
            "final": final,
        }


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write then rename: the harness never reads half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    attack = Slowloris(args.port, args.cafile, args.count)
    result = Path(args.result)
    started = time.monotonic()
    deadline = started + args.max_seconds
    step = args.ramp_seconds / args.count if args.count else 0.0
    tasks = [asyncio.create_task(attack.slot(i * step, deadline)) for i in range(args.count)]
    try:
        ready = asyncio.create_task(attack.all_open.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {ready, stopped},
            timeout=args.ramp_seconds + args.open_deadline,
            return_when=asyncio.FIRST_COMPLETED,
        )
        ready.cancel()
        stopped.cancel()
        snapshot = attack.summary(time.monotonic() - started, final=False)
        await asyncio.to_thread(_write_atomically, result, snapshot)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=remaining)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        final = attack.summary(time.monotonic() - started, final=True)
        await asyncio.to_thread(_write_atomically, result, final)


def main() -> None:
    parser = argparse.ArgumentParser(description="hold slowloris TLS connections")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument(
        "--ramp-seconds", type=float, default=0.0, help="spread the first opens over this long"
    )
    parser.add_argument(
        "--open-deadline",
        type=float,
        default=60.0,
        help="after the ramp, report what is open by then even if not all N are",
    )
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be ≥ 1")
    run_on_fastest_loop(_main(args))


if __name__ == "__main__":
    main()
