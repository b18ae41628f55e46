"""Request bodies on their way upstream: streamed as they come, or, when the data guard or a
route `map` must see them, read whole (up to `data_guard.max_inspect_bytes`) and rewritten.

Either way the first `audit.max_body_bytes` are captured for the audit record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial

from aiohttp import web

from sidecar.audit.guard import guard_body, is_inspectable
from sidecar.audit.record import BodyCapture, CapturedBody
from sidecar.config import DataGuard, RouteMap
from sidecar.errors import BodyTooLarge
from sidecar.proxy import LimitedBody, body_chunks

INLINE_INSPECT_BYTES = 64 * 1024


@dataclass(slots=True)
class Captures:
    """What the audit record will hold of this exchange's bodies."""

    limit: int  # audit.max_body_bytes
    request: BodyCapture
    response: BodyCapture
    mapped: CapturedBody | None = None  # None: forwarded exactly as received
    screened: bool = False  # the guard read the whole body and found nothing to mask
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The body to send upstream; `rewritten` means its length must be computed anew."""

    body: bytes | LimitedBody | None
    rewritten: bool


async def prepare_request_body(
    request: web.BaseRequest,
    route_map: RouteMap | None,
    *,
    guard: DataGuard,
    max_body: int,
    body_timeout_s: float,
    captures: Captures,
) -> Outgoing:
    if not request.body_exists:
        return Outgoing(None, rewritten=False)
    content_type = request.headers.get("Content-Type")
    streamed = Outgoing(
        LimitedBody(request.content, max_body, timeout_s=body_timeout_s, capture=captures.request),
        rewritten=False,
    )
    if not ((guard.active or route_map is not None) and is_inspectable(content_type)):
        return streamed
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # SPEC §12: compressed bodies are forwarded as they are, never inflated, so the guard
        # cannot look inside. The record shows the encoding; the log line says so too.
        captures.notes["guard"] = f"not inspected: {encoding}-encoded"
        return streamed
    limit = min(guard.max_inspect_bytes, max_body)
    data = await _read_whole(request, limit, body_timeout_s)
    captures.request.feed(data)
    inspect = partial(
        guard_body,
        data,
        content_type,
        card_numbers=guard.card_numbers,
        credentials=guard.credentials,
        route_map=route_map,
    )
    # Scanning is pure Python (up to ~0.6 s per MiB in the worst case): small bodies inline,
    # large ones off the event loop so one upload cannot stall every other request.
    if len(data) <= INLINE_INSPECT_BYTES:
        result = inspect()
    else:
        result = await asyncio.get_running_loop().run_in_executor(None, inspect)
    captures.screened = not result.findings
    if not result.changed:
        return Outgoing(data, rewritten=False)
    mapped = BodyCapture(captures.limit)
    mapped.feed(result.body)
    captures.mapped = mapped.result()
    return Outgoing(result.body, rewritten=True)


async def _read_whole(request: web.BaseRequest, limit: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request.content, timeout_s):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than the {limit} bytes the data guard inspects")
        chunks.append(chunk)
    return b"".join(chunks)
