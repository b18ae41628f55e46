"""The bytes of one upstream exchange: the request head as it is written, and the strict
reading of the response head that comes back.

The response is parsed by llhttp (through httptools), which already refuses Content-Length
with Transfer-Encoding, several Content-Length fields, obs-fold, bare CR or LF and control
bytes in names and values. What it lets through and a proxy must not is refused here: a
Transfer-Encoding other than exactly `chunked` (a body framed by a coding the proxy does not
decode would be read to the connection's end, and read differently by the next hop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.errors import UpstreamUnavailable

# Methods that carry no body unless the client sent one: no `Content-Length: 0` for them
# (the same set as aiohttp's client, so the upstream sees what it saw before).
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Control bytes aiohttp's serialisers refuse too (CR and LF are counted apart: see below).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# RFC 9112 §4: a reason phrase is tabs, spaces and visible (or obs-text) bytes. llhttp lets
# other control bytes by, and aiohttp's writer then refuses the status line: a 500 of ours.
_NOT_IN_REASON = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The largest response head read (status line and fields), as `limits.max_header_bytes`
# bounds a request's; the pool's owner may set another.
MAX_HEAD_BYTES = 64 * 1024


class Malformed(UpstreamUnavailable):
    """The upstream's response cannot be read unambiguously: 502, the connection discarded."""


@dataclass(slots=True)
class ResponseHead:
    """The upstream's final status line and header fields, as received and checked."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    connection: list[str]  # every Connection field's value, for the hop-by-hop names
    length: int | None  # Content-Length; None for a chunked or close-delimited body
    chunked: bool
    keep_alive: bool

    @property
    def bodiless(self) -> bool:
        """The headers are the whole answer: 204, 304, or a declared length of 0."""
        return self.status in (204, 304) or self.length == 0


def request_head(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    *,
    content_length: int | None,
    chunked: bool,
) -> bytes:
    """The request line and header block, ending in its blank line.

    Any Content-Length in `headers` is replaced by `content_length` (the body's own, or the
    client's for a streamed one): the framing the upstream reads is the one actually sent.
    Values are encoded as aiohttp decoded them (UTF-8, surrogates for undecodable bytes), so
    the upstream gets the client's bytes; one with a control byte fails the exchange (502)
    rather than be written as two lines.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if name.lower() != "content-length":
            lines.append(f"{name}: {value}")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    elif chunked:
        lines.append("Transfer-Encoding: chunked")
    elif method not in _NO_BODY_METHODS:
        lines.append("Content-Length: 0")
    text = "\r\n".join(lines)
    breaks = len(lines) - 1  # exactly the line ends joined in: no CR or LF from a value
    if text.count("\n") != breaks or text.count("\r") != breaks or _FORBIDDEN.search(text):
        raise UpstreamUnavailable("a forwarded header holds a control character")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")


def client_content_length(headers: list[tuple[str, str]]) -> int | None:
    """The client's Content-Length among the forwarded headers (aiohttp has checked it)."""
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


class HeadReader:
    """Collects one response head from httptools callbacks and checks it (see the module).

    Informational answers (100 Continue, 102, 103) are skipped as aiohttp's client skips
    them; a 101 is kept, for the caller to refuse.
    """

    __slots__ = ("_fields", "_max_bytes", "_reason", "_size")

    def __init__(self, max_bytes: int = MAX_HEAD_BYTES) -> None:
        self._fields: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._size = 0
        self._max_bytes = max_bytes

    def status(self, reason: bytes) -> None:
        """A piece of the reason phrase."""
        self._reason += reason
        self._count(len(reason))

    def header(self, name: bytes, value: bytes) -> None:
        """One field of the head."""
        self._fields.append((name, value))
        self._count(len(name) + len(value) + 4)

    def _count(self, size: int) -> None:
        # llhttp sets no bound on a head: without one an upstream could stream header fields
        # into memory until the timeout, and pass on a head no client library would read.
        self._size += size
        if self._size > self._max_bytes:
            raise Malformed("the upstream sent a response head larger than allowed")

    def complete(self, status: int, keep_alive: bool) -> ResponseHead | None:
        """The head just ended: the final one, checked, or None for an informational one."""
        fields, reason = self._fields, self._reason
        self._fields, self._reason, self._size = [], b"", 0
        if 100 <= status < 200 and status != 101:
            return None
        headers = []
        connection = []
        length = None
        codings = []
        for raw_name, raw_value in fields:
            name = raw_name.decode("utf-8", "surrogateescape")
            value = raw_value.decode("utf-8", "surrogateescape")
            lowered = name.lower()
            if lowered == "content-length":
                length = int(value)  # llhttp accepts digits only, and one field
            elif lowered == "transfer-encoding":
                codings.append(value)
            elif lowered == "connection":
                connection.append(value)
            headers.append((name, value))
        if codings and (len(codings) > 1 or codings[0].strip().lower() != "chunked"):
            raise Malformed("the upstream sent a Transfer-Encoding other than chunked")
        phrase = reason.decode("latin-1")
        if _NOT_IN_REASON.search(phrase):
            raise Malformed("the upstream sent a control character in its reason phrase")
        return ResponseHead(
            status=status,
            reason=phrase,
            headers=headers,
            connection=connection,
            length=None if codings else length,
            chunked=bool(codings),
            keep_alive=keep_alive,
        )
