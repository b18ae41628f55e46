"""Invalid-key flood: well-formed keys (right shape, right checksum, this sidecar's prefix
and environment) that no one ever issued, sent open-loop at a fixed rate.

Such a key passes every check that costs nothing and reaches the key store (once: then the
negative cache of unknown ids answers), unless the per-IP failed-authentication limit stops
the source first; it costs no argon2 (before issue 16 it cost a decoy run). Two shapes of
attacker:

- `single`: all requests from one address (127.0.0.2, not the valid client's 127.0.0.1);
  the per-IP limit (default 20 failures a minute) should turn it into cheap 429s.
- `many`: round-robin over 1,000 loopback source addresses (127.1.x.y), each staying under
  that limit, as a botnet would: every request gets past the limit.

Run as its own process; it stops on SIGTERM (or after --max-seconds) and writes its status
counts as JSON to --result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench.payloads import REQUEST_BODY, ROUTE_PATH
from bench.sidecar_target import ENVIRONMENT, PREFIX
from bench.upstream import run_on_fastest_loop
from sidecar.keys.format import generate_key

MANY_SOURCES = 1000
_MAX_IN_FLIGHT = 1024
_REQUEST_TIMEOUT_S = 10.0


def source_addresses(shape: str) -> list[str]:
    if shape == "single":
        return ["127.0.0.2"]
    return [f"127.1.{n // 250}.{n % 250 + 1}" for n in range(MANY_SOURCES)]


class Flood:
    def __init__(self, port: int, cafile: str, sources: list[str]) -> None:
        self._url = f"https://127.0.0.1:{port}{ROUTE_PATH}"
        self._context = ssl.create_default_context(cafile=cafile)
        self._sources = sources
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.statuses: Counter[str] = Counter()
        self.sent = 0
        self.skipped = 0  # too many requests in flight: the sidecar is not answering
        self._in_flight: set[asyncio.Task[None]] = set()

    def _session(self, source: str) -> aiohttp.ClientSession:
        session = self._sessions.get(source)
        if session is None:
            # As many connections as requests in flight: an attacker is not polite, and a
            # small pool would make the client, not the sidecar, set the flood's pace.
            connector = aiohttp.TCPConnector(
                ssl=self._context, local_addr=(source, 0), limit=_MAX_IN_FLIGHT
            )
            session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
            )
            self._sessions[source] = session
        return session

    async def _one(self, source: str) -> None:
        key, _ = generate_key(PREFIX, ENVIRONMENT)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        try:
            async with self._session(source).post(
                self._url, data=REQUEST_BODY, headers=headers
            ) as response:
                await response.read()
                self.statuses[str(response.status)] += 1
        except TimeoutError:
            self.statuses["timeout"] += 1
        except aiohttp.ClientError as exc:
            self.statuses[type(exc).__name__] += 1

    async def run(self, rate: float, stop: asyncio.Event, max_seconds: float) -> None:
        """Start one request every 1/rate seconds until `stop` is set or time runs out."""
        interval = 1.0 / rate
        started = time.monotonic()
        next_at = started
        index = 0
        while not stop.is_set() and time.monotonic() - started < max_seconds:
            if len(self._in_flight) >= _MAX_IN_FLIGHT:
                self.skipped += 1
            else:
                source = self._sources[index % len(self._sources)]
                task = asyncio.create_task(self._one(source))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                self.sent += 1
            index += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < -1.0:
                next_at = time.monotonic()  # fell behind by a second: do not burst to catch up
            elif delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)

    async def close(self) -> None:
        if self._in_flight:  # let the last requests land, briefly, so they are counted
            await asyncio.wait(set(self._in_flight), timeout=2.0)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        for session in self._sessions.values():
            await session.close()

    def summary(self, seconds: float) -> dict[str, object]:
        return {
            "sent": self.sent,
            "seconds": round(seconds, 2),
            "statuses": dict(sorted(self.statuses.items())),
            "unanswered": self.sent - sum(self.statuses.values()),
            "skipped": self.skipped,
        }


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    flood = Flood(args.port, args.cafile, source_addresses(args.sources))
    await asyncio.to_thread(Path(args.result + ".ready").touch)
    started = time.monotonic()
    try:
        await flood.run(args.rate, stop, args.max_seconds)
    finally:
        seconds = time.monotonic() - started
        await flood.close()
        summary = json.dumps(flood.summary(seconds))
        await asyncio.to_thread(Path(args.result).write_text, summary)


def main() -> None:
    parser = argparse.ArgumentParser(description="invalid-key flood")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--sources", choices=("single", "many"), default="single")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--result", required=True, help="where to write the JSON summary")
    args = parser.parse_args()
    run_on_fastest_loop(_main(args))


if __name__ == "__main__":
    main()
