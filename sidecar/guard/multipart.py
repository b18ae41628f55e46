"""Pure: a `multipart/*` body (RFC 2046, RFC 7578) split into parts and put back together.

The guard judges each part by its own headers and bytes, so this module only promises the
framing: `split` returns every part's headers and where its content lies in the body, or
raises `Undecodable` when the framing is not one every parser reads the same way:

- no boundary parameter, no opening delimiter, or no closing delimiter;
- a part without the blank line that ends its headers;
- the delimiter text (`--boundary`) inside a part's content: a parser that accepts bare LF
  line ends would start a new part there that the guard never saw;
- a `Content-Transfer-Encoding` other than 7bit/8bit/binary (RFC 7578 §4.7 forbids them in
  form-data; the guard does not decode base64 or quoted-printable parts).

`join` replaces the content of some parts and keeps every other byte as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from sidecar.guard.sniff import Undecodable

MAX_PARTS = 1000
_IDENTITY_CTE = frozenset({"", "7bit", "8bit", "binary"})


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a multipart body: its headers and where its content lies in the body."""

    headers: dict[str, str]  # names lower-cased; a repeated header is refused
    start: int  # the content's first byte in the body
    end: int  # one past its last byte

    @property
    def content_type(self) -> str | None:
        """The part's Content-Type, if it has one."""
        return self.headers.get("content-type")

    @property
    def field_name(self) -> str | None:
        """The form-data field name (`name=` of Content-Disposition, RFC 2231 forms too)."""
        disposition = self.headers.get("content-disposition")
        if disposition is None:
            return None
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_param("name", header="content-disposition")
        if isinstance(name, tuple):  # RFC 2231: (charset, language, value)
            return str(name[2])
        return None if name is None else str(name)


def boundary(content_type: str | None) -> str:
    """The boundary a multipart Content-Type declares; raises `Undecodable` without a usable one."""
    message = Message()
    message["content-type"] = content_type or ""
    value = message.get_boundary()
    if not value or len(value) > 200:
        raise Undecodable("a multipart body without a usable boundary")
    return value


def split(body: bytes, boundary_text: str) -> list[Part]:
    """The parts of a multipart `body`; raises `Undecodable` when it is not framed as declared."""
    delimiter = b"--" + boundary_text.encode("latin-1")
    if body.startswith(delimiter):
        position = len(delimiter)
    else:
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            raise Undecodable("a multipart body without its boundary")
        position = found + 2 + len(delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", position):
            return parts  # the close delimiter; the epilogue is ignored by every parser
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise Undecodable("a malformed multipart delimiter line")
        head_end = body.find(b"\r\n\r\n", line_end)
        if head_end < 0:
            raise Undecodable("a multipart part without the end of its headers")
        headers = _headers(body[line_end + 2 : head_end + 2])  # empty: no headers at all
        start = head_end + 4
        end = body.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise Undecodable("a multipart body without its closing boundary")
        if body.find(delimiter, start, end) >= 0:
            raise Undecodable("the multipart boundary inside a part")
        if headers.get("content-transfer-encoding", "").strip().lower() not in _IDENTITY_CTE:
            raise Undecodable("a multipart part with a Content-Transfer-Encoding")
        parts.append(Part(headers, start, end))
        if len(parts) > MAX_PARTS:
            raise Undecodable(f"more than {MAX_PARTS} multipart parts")
        position = end + 2 + len(delimiter)


def join(body: bytes, parts: list[Part], contents: dict[int, bytes], boundary_text: str) -> bytes:
    """`body` with the content of part `i` replaced by `contents[i]`."""
    delimiter = b"--" + boundary_text.encode("latin-1")
    pieces: list[bytes] = []
    position = 0
    for index, part in enumerate(parts):
        if index not in contents:
            continue
        if delimiter in contents[index]:
            raise Undecodable("a masked multipart part would contain the boundary")
        pieces += [body[position : part.start], contents[index]]
        position = part.end
    pieces.append(body[position:])
    return b"".join(pieces)


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t":
            raise Undecodable("a folded multipart part header")
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise Undecodable("a malformed multipart part header")
        if name.lower() in headers:
            # Parsers disagree on which copy wins (Go's reads the first, others the last).
            raise Undecodable("a multipart part header sent twice")
        headers[name.lower()] = value.strip()
    return headers
