"""Request bodies on their way upstream: streamed as they come, or, when the data guard or a
route `map` must see them, read whole (up to `data_guard.max_inspect_bytes`) and screened.

Which bodies are held (SPEC §14, "fail closed"):

- either guard kind in `reject` mode: every body. One larger than `max_inspect_bytes` is
  refused (413) rather than forwarded unread, whatever its declared type.
- otherwise (`redact`/`off`, or only a route map): bodies whose declared type the guard reads
  (JSON, forms, text, multipart), refused past the limit as before; bodies with no
  `Content-Type`, held up to the limit and, past it, streamed on unread (`inspected: false`).
  Other declared types (images, archives, octet-stream) stream unread, as they always did.

Either way the first `audit.max_body_bytes` are captured for the audit record, and
`Captures.inspected` says whether the guard read the whole body.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web

from sidecar.audit.exchange import Captures
from sidecar.audit.record import capture
from sidecar.config import DataGuard, RouteMap
from sidecar.errors import BadRequest, BodyTooLarge, KeyInHeader
from sidecar.guard import inflate
from sidecar.guard.keyshapes import find_key
from sidecar.guard.screen import screen_body
from sidecar.guard.shown import shown_header
from sidecar.guard.sniff import Undecodable, declared_kind, looks_like_form, media_type
from sidecar.proxy.screening import MisplacedKey
from sidecar.proxy.upstream import Capture, LimitedBody, body_chunks

INLINE_INSPECT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The body to send upstream; `rewritten` means its length must be computed anew."""

    body: bytes | LimitedBody | None
    rewritten: bool
    misplaced_key: MisplacedKey | None = None  # a key-shaped string in a form field


def form_as_read(
    data: bytes, kind: str | None, content_encoding: str | None, limit: int
) -> bytes | None:
    """A urlencoded or multipart form's bytes as the upstream will read them (inflated when
    it came compressed); None for any other body, or one the guard will refuse anyway."""
    if kind not in ("form", "multipart"):
        return None
    if not content_encoding:
        return data
    try:
        return inflate.inflate(data, inflate.codings(content_encoding), limit)
    except Undecodable:
        return None  # the guard refuses it, or says it did not read it


def key_in_body(data: bytes, kind: str | None) -> MisplacedKey | None:
    """A key-shaped string in a held body (a form as `form_as_read` gives it), or None.
    Keys need no percent-encoding, but a client may encode them anyway: forms are decoded
    first. The upstream has no use for this sidecar's keys, and a record must not hold one."""
    if b"_" not in data and b"%" not in data:
        return None
    text = data.decode("latin-1")
    found = find_key(unquote_plus(text, encoding="latin-1") if kind == "form" else text)
    if found is None:
        return None
    refusal = KeyInHeader(
        "API keys must not be sent in a request body; a key sent there is flagged exposed"
    )
    return MisplacedKey(found, refusal)


def refuse_override_field(data: bytes, kind: str | None) -> None:
    """A urlencoded `_method` field (Laravel, Symfony and Rails turn a POST into the method it
    names): 400, as for the query parameter and the override headers."""
    if kind != "form" or b"_method" not in data:
        return
    for field_text in re.split(rb"[&;]", data):
        name = unquote_plus(field_text.partition(b"=")[0].decode("latin-1"))
        if name.strip().lower() == "_method":
            raise BadRequest("method override parameters (_method) are not accepted")


async def prepare_request_body(
    request: web.BaseRequest,
    route_map: RouteMap | None,
    *,
    guard: DataGuard,
    max_body: int,
    body_timeout_s: float,
    captures: Captures,
) -> Outgoing:
    """The body to forward: streamed, or read whole and screened by the data guard (above)."""
    if not request.body_exists:
        return Outgoing(None, rewritten=False)
    content_type = request.headers.get("Content-Type")
    streamed = Outgoing(
        LimitedBody(request.content, max_body, timeout_s=body_timeout_s, capture=captures.request),
        rewritten=False,
    )
    reject = "reject" in (guard.card_numbers, guard.credentials)
    kind = declared_kind(media_type(content_type))
    if not (guard.active or route_map is not None) or not (reject or kind or not content_type):
        captures.inspected = False
        # The type is the client's text, quoted in the log line: masked and bounded.
        shown_type = shown_header(media_type(content_type), cards=guard.card_numbers != "off")
        captures.note = "not inspected: " + (
            "data guard off" if not guard.active else f"{shown_type} streamed"
        )
        return streamed
    limit = min(guard.max_inspect_bytes, max_body)
    chunks, size = await _read_up_to(request, limit, body_timeout_s)
    if size > limit:
        if reject or kind is not None or size > max_body:
            raise BodyTooLarge(f"the body is larger than the {limit} bytes the data guard inspects")
        # Untyped and too big to hold in redact mode: what was read goes first, the rest
        # streams on; the record says the guard did not read it.
        for chunk in chunks:
            captures.request.feed(chunk)
        captures.inspected = False
        captures.note = f"not inspected: untyped body over {limit} bytes"
        rest = _HeldThenStreamed(
            chunks, request.content, max_body, timeout_s=body_timeout_s, capture=captures.request
        )
        return Outgoing(rest, rewritten=False)
    data = b"".join(chunks)
    form_kind = kind or ("form" if looks_like_form(data) else None)
    form = form_as_read(
        data, form_kind, request.headers.get("Content-Encoding"), guard.max_inspect_bytes
    )
    misplaced = key_in_body(data if form is None else form, form_kind)
    if misplaced is not None:
        return Outgoing(None, rewritten=False, misplaced_key=misplaced)
    if form is not None:
        refuse_override_field(form, form_kind)
    captures.request.feed(data)
    inspect = partial(
        screen_body,
        data,
        content_type,
        request.headers.get("Content-Encoding"),
        card_numbers=guard.card_numbers,
        credentials=guard.credentials,
        route_map=route_map,
        max_inspect_bytes=guard.max_inspect_bytes,
    )
    # Scanning is pure Python (see the README for the bound per MiB): small bodies inline,
    # large or compressed ones (which may inflate to the limit) off the event loop, so one
    # upload cannot stall every other request.
    if len(data) <= INLINE_INSPECT_BYTES and "Content-Encoding" not in request.headers:
        result = inspect()
    else:
        result = await asyncio.get_running_loop().run_in_executor(None, inspect)
    captures.inspected = result.inspected
    captures.screened = result.inspected and not result.findings
    if result.note is not None:
        captures.note = result.note
    if not result.changed:
        return Outgoing(data, rewritten=False)
    captures.mapped = capture(result.body, captures.limit)
    return Outgoing(result.body, rewritten=True)


async def _read_up_to(
    request: web.BaseRequest, limit: int, timeout_s: float
) -> tuple[list[bytes], int]:
    """The body's chunks until it ends or passes `limit` bytes, and how many bytes they hold."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request.content, timeout_s):
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            break
    return chunks, size


class _HeldThenStreamed(LimitedBody):
    """The chunks already read, then the rest of the body, within the same `max_bytes`."""

    def __init__(
        self,
        held: list[bytes],
        stream: aiohttp.StreamReader,
        max_bytes: int,
        *,
        timeout_s: float,
        capture: Capture,
    ) -> None:
        held_bytes = sum(len(chunk) for chunk in held)
        super().__init__(stream, max_bytes - held_bytes, timeout_s=timeout_s, capture=capture)
        self._held = held

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._held_then_rest()

    async def _held_then_rest(self) -> AsyncIterator[bytes]:
        for chunk in self._held:
            yield chunk
        async for chunk in LimitedBody.__aiter__(self):
            yield chunk
