"""Pure: what a request body is, decided from its bytes as much as from its declared type.

SPEC §14: the data guard must not take a client's word for a body's type or encoding. This
module promises three things:

- `media_type` / `charset` / `declared_kind`: what the headers claim, normalised.
- `json_encoding`: the RFC 8259 encoding of a JSON text (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE,
  each with or without a byte-order mark), from the bytes alone, as RFC 8259 §8.1 and the
  RFC 4627 §3 zero-byte pattern allow.
- `decode`: the body's text in the encoding it is really in, or `Undecodable` when the guard
  cannot read it (a charset Python does not know, bytes that are not in the declared charset).
  ASCII-compatible single-byte charsets are read byte-exactly (surrogateescape), so masking
  digits keeps every other byte as it was.

Nothing here looks for card numbers or credentials; nothing here raises anything but
`Undecodable`.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["json", "form", "text", "multipart"]
AS_IS = "as-is"  # the pseudo-codec of bytes read byte-exactly (UTF-8 or an ASCII superset)
FORM_MEDIA = "application/x-www-form-urlencoded"

# Codecs whose every ASCII byte is that ASCII character and never part of another one: a digit
# byte is a digit. (GB18030 and friends are not: 0x30-0x39 may be a 4-byte sequence's tail.)
_READ_AS_IS = frozenset(
    {"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252", "cp1250", "cp1251", "iso8859-15"}
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    # Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Control characters that do not occur in text: their presence makes a body binary.
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
# What a WHATWG urlencoded serializer emits, with `=` and `&`: a body of only these, with a `=`,
# is read as a form when it came without a usable type.
_FORMISH = re.compile(rb"[A-Za-z0-9%+*._~\-\[\]]+=[A-Za-z0-9%+*._~\-\[\]=&]*")


class Undecodable(Exception):
    """The guard cannot read this body. The message names what, never the body's content."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A body's text, and how to turn (masked) text back into bytes the way the body came."""

    text: str
    codec: str  # AS_IS, or the Python codec name to encode the text back with
    bom: bytes  # the byte-order mark the body began with (kept when re-encoding)

    def encode(self, text: str) -> bytes:
        """`text` encoded as the body was (its codec and byte-order mark)."""
        if self.codec == AS_IS:
            return self.bom + text.encode("utf-8", "surrogateescape")
        try:
            return self.bom + text.encode(self.codec)
        except UnicodeError:
            raise Undecodable(f"the masked body cannot be written back in {self.codec}") from None


def media_type(content_type: str | None) -> str:
    """The declared media type, lower-cased, without parameters ("" when there is none)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def charset(content_type: str | None) -> str | None:
    """The declared `charset` parameter, as written (unquoted), or None."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def declared_kind(media: str) -> Kind | None:
    """How a body of this media type is read; None: its type says nothing (sniff it)."""
    if "/" not in media:
        return None
    top, _, sub = media.partition("/")
    if sub in ("json", "x-json") or sub.endswith("+json"):
        return "json"
    if media == FORM_MEDIA:
        return "form"
    if top == "multipart":
        return "multipart"
    if top == "text":
        return "text"
    return None


def bom_codec(data: bytes) -> tuple[str, bytes] | None:
    """(codec, mark) when the bytes begin with a Unicode byte-order mark."""
    for mark, codec in _BOMS:
        if data.startswith(mark):
            return codec, mark
    return None


def json_encoding(data: bytes) -> tuple[str, bytes]:
    """(codec, byte-order mark) of a JSON text: the mark if any, else the zero-byte pattern of
    its first characters (a JSON text starts with two ASCII characters, RFC 4627 §3)."""
    found = bom_codec(data)
    if found is not None:
        return found
    head = data[:4]
    if len(head) >= 4 and head[:3] == b"\0\0\0" and head[3]:
        return "utf-32-be", b""
    if len(head) >= 4 and head[0] and head[1:] == b"\0\0\0":
        return "utf-32-le", b""
    if len(head) >= 2 and not head[0] and head[1]:
        return "utf-16-be", b""
    if len(head) >= 2 and head[0] and not head[1]:
        return "utf-16-le", b""
    return "utf-8", b""


def decode_json(data: bytes, declared: str | None) -> Decoded:
    """A JSON body's text. RFC 8259 §11: a `charset` parameter means nothing for JSON, so the
    bytes decide; an ASCII-compatible declaration is read byte-exactly as before."""
    codec, bom = json_encoding(data)
    if codec == "utf-8" and not bom:
        if not reads_as_is(declared):
            # JSON parsers read these bytes as UTF-8 whatever the label (RFC 8259 §8.1, §11);
            # decoding them as the label says (cp037, utf-16) would inspect another text.
            raise Undecodable("the declared charset disagrees with the bytes (JSON is UTF-8)")
        return _as_is(data, declared)
    return _strict(data[len(bom) :], codec, bom)


def decode(data: bytes, declared: str | None) -> Decoded | None:
    """A body's text; None when it is binary (no charset says otherwise and it is not text)."""
    found = bom_codec(data)
    if found is not None:
        codec, bom = found
        return _strict(data[len(bom) :], codec, bom)
    if declared is not None:
        return _as_is(data, declared)
    codec, _ = json_encoding(data)
    if codec != "utf-8":
        # Zero bytes where UTF-16/32 puts them: wide text without a mark, if it decodes.
        try:
            return _strict(data, codec, b"")
        except Undecodable:
            return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _BINARY.search(text):
        return None
    return Decoded(text, AS_IS, b"")


def looks_like_form(data: bytes) -> bool:
    """Whether an untyped body reads as `application/x-www-form-urlencoded`."""
    return _FORMISH.fullmatch(data) is not None


def reads_as_is(declared: str | None) -> bool:
    """Whether a body in this charset is read byte-exactly; Undecodable for an unknown one."""
    if declared is None:
        return True
    try:
        return codecs.lookup(declared).name in _READ_AS_IS
    except LookupError:
        raise Undecodable("a charset the data guard does not read") from None


def _as_is(data: bytes, declared: str | None) -> Decoded:
    """Bytes in the declared charset: read byte-exactly when digits are digit bytes in it,
    else decoded strictly. A charset Python does not know is refused."""
    if declared is None:
        return Decoded(data.decode("utf-8", "surrogateescape"), AS_IS, b"")
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        raise Undecodable("a charset the data guard does not read") from None
    if codec in _READ_AS_IS:
        return Decoded(data.decode("utf-8", "surrogateescape"), AS_IS, b"")
    if codec in ("utf-16", "utf-32"):
        # No mark (it was looked for first): the zero bytes say the order, else big-endian.
        guessed, _ = json_encoding(data)
        width = codec[-2:]
        codec = guessed if guessed.startswith(f"utf-{width}") else f"utf-{width}-be"
    return _strict(data, codec, b"")


def _strict(data: bytes, codec: str, bom: bytes) -> Decoded:
    try:
        return Decoded(data.decode(codec), codec, bom)
    except (UnicodeError, LookupError):
        raise Undecodable(f"the body is not valid {codec}") from None
