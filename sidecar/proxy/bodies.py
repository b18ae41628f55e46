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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web

from sidecar.audit.exchange import Captures
from sidecar.audit.record import capture
from sidecar.config import DataGuard, RouteMap
from sidecar.errors import BodyTooLarge, KeyInHeader
from sidecar.guard.screen import screen_body
from sidecar.guard.sniff import declared_kind, looks_like_form, media_type
from sidecar.keys.format import KEY_PATTERN
from sidecar.proxy.screening import MisplacedKey
from sidecar.proxy.upstream import Capture, LimitedBody, body_chunks

INLINE_INSPECT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The body to send upstream; `rewritten` means its length must be computed anew."""

    body: bytes | LimitedBody | None
    rewritten: bool
    misplaced_key: MisplacedKey | None = None  # a key-shaped string in a form field


def key_in_form(data: bytes, kind: str | None) -> MisplacedKey | None:
    """A key-shaped string in a urlencoded or multipart form's fields, or None.

    Keys are made of characters that need no percent-encoding, but a client may encode them
    anyway, so a urlencoded form is decoded before it is searched."""
    if kind not in ("form", "multipart") or (b"_" not in data and b"%" not in data):
        return None
    text = data.decode("latin-1")
    if kind == "form":
        text = unquote_plus(text, encoding="latin-1")
    found = KEY_PATTERN.search(text)
    if found is None:
        return None
    refusal = KeyInHeader(
        "API keys must not be sent in form fields; a key sent there is flagged exposed"
    )
    return MisplacedKey(found.group(0), refusal)


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
        captures.note = "not inspected: " + (
            "data guard off" if not guard.active else f"{media_type(content_type)} streamed"
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
    misplaced = key_in_form(data, kind or ("form" if looks_like_form(data) else None))
    if misplaced is not None:
        return Outgoing(None, rewritten=False, misplaced_key=misplaced)
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
