"""Pure: `Content-Encoding` undone for inspection only, with a bounded output, and redone.

SPEC §12 forwards compressed request bodies as they are; SPEC §14 wants the guard to see
inside them. So the guard inflates a copy: `inflate` never produces more than `limit` bytes
(a zip bomb is refused as soon as its output passes the limit, without inflating the rest),
and `compress` re-applies the same codings when a body had to be masked, so the
`Content-Encoding` the upstream reads always describes the bytes it gets.

Codings: gzip (x-gzip), deflate (zlib-wrapped as RFC 9110 says, raw deflate as some clients
send it), br, identity; stacked as the header lists them ("gzip, br": gzip applied first).
Anything else raises `Undecodable`.
"""

from __future__ import annotations

import gzip
import zlib

import brotli  # type: ignore[import-untyped]

from sidecar.guard.sniff import Undecodable

MAX_CODINGS = 4  # more layers than any client sends: refused rather than unwrapped
_KNOWN = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate", "br": "br"}


def codings(header: str | None) -> list[str]:
    """The codings of a `Content-Encoding` value, in the order they were applied."""
    found: list[str] = []
    for token in (header or "").split(","):
        name = token.strip().lower()
        if not name or name == "identity":
            continue
        if name not in _KNOWN:
            raise Undecodable("a Content-Encoding the data guard does not inflate")
        found.append(_KNOWN[name])
    if len(found) > MAX_CODINGS:
        raise Undecodable(f"more than {MAX_CODINGS} stacked content codings")
    return found


def inflate(data: bytes, applied: list[str], limit: int) -> bytes:
    """`data` with `applied` codings undone, last first; Undecodable past `limit` bytes."""
    for coding in reversed(applied):
        data = _brotli(data, limit) if coding == "br" else _zlib(data, coding, limit)
    return data


def compress(data: bytes, applied: list[str]) -> bytes:
    """`data` with the same codings applied again, in order (gzip without a timestamp)."""
    for coding in applied:
        if coding == "gzip":
            data = gzip.compress(data, mtime=0)
        elif coding == "deflate":
            data = zlib.compress(data)
        else:
            data = brotli.compress(data)
    return data


def _too_big(limit: int) -> Undecodable:
    return Undecodable(f"the body inflates past the {limit} bytes the data guard inspects")


def _zlib(data: bytes, coding: str, limit: int) -> bytes:
    if coding == "deflate" and not _zlib_header(data):
        wbits = -zlib.MAX_WBITS  # raw deflate, as some clients send "deflate"
    else:
        wbits = zlib.MAX_WBITS | (16 if coding == "gzip" else 0)
    out = bytearray()
    remaining = data
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(remaining, limit + 1 - len(out))
        except zlib.error:
            raise Undecodable(f"the body is not valid {coding}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_big(limit)
        if not inflater.eof:
            raise Undecodable(f"the {coding} body is cut short")
        remaining = inflater.unused_data
        # gzip allows several members one after the other; anything else after the end is
        # bytes the upstream may read and the guard would not have.
        if not remaining:
            return bytes(out)
        if coding != "gzip":
            raise Undecodable(f"bytes after the end of the {coding} stream")


def _zlib_header(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _brotli(data: bytes, limit: int) -> bytes:
    inflater = brotli.Decompressor()
    try:
        out: bytes = inflater.process(data, output_buffer_limit=limit + 1)
    except brotli.error:
        raise Undecodable("the body is not valid br") from None
    if len(out) > limit:
        raise _too_big(limit)
    if not inflater.is_finished():
        raise Undecodable("the br body is cut short")
    return out
