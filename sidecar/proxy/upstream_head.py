"""HEAD requests upstream, each on a connection of its own that is closed after the answer.

Some upstreams (and frameworks that render a GET for a HEAD) send a body after a HEAD answer.
aiohttp's client then reads those bytes as the start of the next response on the same
connection and fails the whole exchange, so every HEAD became a 502. Here only the answer's
head is read, with the same C parser family (llhttp, through httptools) and the same strict
rules; whatever follows it is discarded with the connection. HEAD is rare enough that a
connection per request costs nothing worth pooling.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import httptools
from yarl import URL

from sidecar.errors import UpstreamTimeout, UpstreamUnavailable


@dataclass(slots=True)
class HeadAnswer:
    """The upstream's status line and header fields, in order, as received."""

    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        """httptools: a piece of the status line's reason phrase."""
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header field."""
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        """httptools: the head has ended."""
        self.complete = True


def head_request(target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request head to send: the client's headers (already parsed strictly, so free of
    CR and LF) and `Connection: close`."""
    lines = [f"HEAD {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += ["Connection: close", "", ""]
    # The bytes the client sent: aiohttp decoded them as UTF-8 with surrogateescape, so that
    # encoding gives them back exactly (latin-1 changed UTF-8 values and failed on others).
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def parse_head(data: bytes) -> HeadAnswer:
    """The answer in `data` (a whole head, up to its blank line); raises `UpstreamUnavailable`
    for anything llhttp does not accept."""
    answer = HeadAnswer()
    parser = httptools.HttpResponseParser(answer)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        raise UpstreamUnavailable("the upstream sent a malformed response") from None
    if not answer.complete:
        raise UpstreamUnavailable("the upstream sent a malformed response")
    answer.status = parser.get_status_code()
    return answer


async def fetch_head(
    url: URL,
    headers: list[tuple[str, str]],
    *,
    ssl_context: ssl.SSLContext | None,
    connect_timeout_s: float,
    timeout_s: float,
    max_head_bytes: int,
) -> HeadAnswer:
    """Send one HEAD to `url` and return the answer's head; 502/504 as `forward` maps them."""
    assert url.host is not None
    assert url.port is not None
    target = url.raw_path_qs
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(url.host, url.port, ssl=ssl_context, limit=max_head_bytes),
                connect_timeout_s,
            )
            try:
                writer.write(head_request(target, headers))
                data = await reader.readuntil(b"\r\n\r\n")
            finally:
                writer.close()
    except TimeoutError:
        raise UpstreamTimeout("the upstream did not answer in time") from None
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise UpstreamUnavailable(f"the upstream failed ({type(exc).__name__})") from None
    return parse_head(data)
