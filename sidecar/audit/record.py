"""Pure: the audit record of one exchange, exactly as SPEC §7 lays it out (schema v1).

Bodies are captured up to a limit while they stream (`BodyCapture`), then written as UTF-8 text
or, when they are not UTF-8, as base64. What the data guard masks in a forwarded body is masked
in every body the record keeps (SPEC §7: "including raw_body"); credential headers never enter it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from sidecar.errors import SidecarError
from sidecar.guard.credentials import CREDENTIAL_HEADERS, is_credential_name
from sidecar.guard.keyshapes import mask_keys
from sidecar.guard.rules import redact_bytes, redact_text

# Re-exported: the record, events and log lines bound and mask shown text the same way.
from sidecar.guard.shown import SHOWN_CHARS as SHOWN_CHARS
from sidecar.guard.shown import bounded as bounded
from sidecar.guard.shown import masked, might_need_masking

if TYPE_CHECKING:
    from sidecar.audit.exchange import Exchange, K

SCHEMA_VERSION = 1
UTF8 = "utf-8"
BASE64 = "base64"
_FORM = "application/x-www-form-urlencoded"
# The longest a UTF-8 sequence can lack at the end of a capture: a 4-byte one cut after 3.
_MAX_CUT = 3


@dataclass(frozen=True, slots=True)
class CapturedBody:
    """The first bytes of a body (up to the capture limit) and how many bytes it had in all."""

    data: bytes
    total: int

    @property
    def truncated(self) -> bool:
        """Whether the body had more bytes than were kept."""
        return self.total > len(self.data)


class BodyCapture:
    """A tee for a streaming body: keeps the first `limit` bytes, counts every byte."""

    __slots__ = ("_buffer", "_limit", "_total")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the capture limit cannot be negative")
        self._limit = limit
        self._buffer = bytearray()
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        """Count `chunk`, and keep what of it fits under the limit."""
        self._total += len(chunk)
        room = self._limit - len(self._buffer)
        if room > 0:
            self._buffer += chunk[:room]

    def result(self) -> CapturedBody:
        """What was kept, and how many bytes were fed in all."""
        return CapturedBody(bytes(self._buffer), self._total)


def capture(data: bytes, limit: int) -> CapturedBody:
    """A whole body already in hand (the guard's output, say), captured as `BodyCapture` would."""
    return CapturedBody(data[:limit], len(data))


def encode_body(data: bytes, *, truncated: bool = True) -> tuple[str, str]:
    """(text, "utf-8") when `data` is UTF-8, else (base64 text, "base64").

    A capture cut at the limit may end inside a multi-byte character: when `truncated`, up to
    three bytes of an incomplete final sequence are left out instead of turning the whole body
    into base64.
    """
    text = _utf8(data, truncated=truncated)
    if text is not None:
        return text, UTF8
    return base64.b64encode(data).decode("ascii"), BASE64


def _utf8(data: bytes, *, truncated: bool) -> str | None:
    try:
        return data.decode(UTF8)
    except UnicodeDecodeError as error:
        cut_short = error.reason == "unexpected end of data" and error.end == len(data)
        if truncated and cut_short and len(data) - error.start <= _MAX_CUT:
            # The decoder stops at the first problem: everything before it is valid.
            return data[: error.start].decode(UTF8)
        return None


def recordable_headers(
    headers: Iterable[tuple[str, str]], key_header: str | None
) -> dict[str, str]:
    """Headers fit for the record: names lower-cased, repeats joined with ", ", credentials out.

    Out go the credential headers (`Authorization`, `Proxy-Authorization`, `Cookie`,
    `Set-Cookie`), the configured key header, and any header named like a credential
    (`X-Api-Key`, `X-Auth-Token`): a record must never hold a secret in cleartext.
    """
    dropped = CREDENTIAL_HEADERS | ({key_header.lower()} if key_header else set())
    recorded: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in dropped or is_credential_name(lowered):
            continue
        recorded[lowered] = f"{recorded[lowered]}, {value}" if lowered in recorded else value
    return recorded


def build_record(
    exchange: Exchange[K],
    *,
    ts: str,
    response_headers: Iterable[tuple[str, str]],
    duration_ms: float,
    card_numbers: str,
    credentials: str,
    key_header: str | None = None,
) -> dict[str, object]:
    """The SPEC §7 record of an audited exchange (one whose `captures` are set).

    `captures.mapped` None means the body was forwarded as received. `captures.inspected`
    (recorded as `request.inspected`, SPEC §14): whether the data guard read the whole request
    body. When it did not, `mapped_body` is the forwarded bytes exactly, unmasked: the record
    must not show a masked body the upstream never got. `captures.screened`: the data guard
    already read the whole request body with these modes and found nothing, so masking it again
    would only cost time (a truncated capture is still masked: its scan can differ from the
    guard's).

    The guard's masking (`card_numbers`, `credentials` modes other than off) is applied to both
    request bodies, to the response body, and to the path and query. Headers go through
    `recordable_headers` (with `key_header`), so no credential header enters a record. With no
    authenticated key, anyone may have sent it: the path and query are `bounded`.
    """
    captures = exchange.captures
    assert captures is not None, "only an audited exchange has a record"
    raw_body, response_body = captures.request.result(), captures.response.result()
    masking = _Masking(
        card_numbers=card_numbers,
        credentials=credentials,
        request_clean=captures.screened and not raw_body.truncated,
        mapped_verbatim=not captures.inspected,
    )
    request_headers = masking.headers(recordable_headers(exchange.request_headers, key_header))
    response_recorded = masking.headers(recordable_headers(response_headers, key_header))
    raw_text, mapped_text, encoding = masking.request_bodies(
        raw_body, captures.mapped, request_headers.get("content-type")
    )
    response_text = masking.body(response_body, response_recorded.get("content-type"))
    if encoding == UTF8:
        # No key string in any record: key-shaped strings are refused in requests, and masked
        # here in what got through unread (a streamed body) and in what the upstream said.
        raw_text, mapped_text = mask_keys(raw_text), mask_keys(mapped_text)
    response_text = mask_keys(response_text)
    principal = exchange.principal
    # Masked, then bounded (as `shown` does for the event and the log line): a cut must not
    # leave part of a card number unmasked.
    path, query = masking.path(exchange.path), masking.query(exchange.query)
    if principal is None:
        path, query = bounded(path), bounded(query)
    upstream_seconds = exchange.upstream_seconds
    return {
        "v": SCHEMA_VERSION,
        "ts": ts,
        "request_id": exchange.request_id,
        "method": exchange.method,
        "path": path,
        "query": query,
        "client_ip": exchange.client_ip,
        "key_name": principal.name if principal else None,
        "key_id": principal.key_id if principal else None,
        "scopes": list(principal.scopes) if principal else [],
        "request": {
            "headers": request_headers,
            "raw_body": raw_text,
            "mapped_body": mapped_text,
            "body_encoding": encoding,
            "body_truncated": raw_body.truncated,
            "body_bytes": raw_body.total,
            "inspected": captures.inspected,
        },
        "response": {
            "status": exchange.status,
            "headers": response_recorded,
            "body": response_text,
            "body_truncated": response_body.truncated,
            "body_bytes": response_body.total,
        },
        "duration_ms": _milliseconds(duration_ms),
        "upstream_ms": None if upstream_seconds is None else _milliseconds(upstream_seconds * 1000),
    }


def dumps_record(record: Mapping[str, object]) -> bytes:
    """The record as compact UTF-8 JSON: one stream entry, one spool line."""
    try:
        return orjson.dumps(record)  # the same compact JSON as json.dumps, ~5x faster
    except orjson.JSONEncodeError:
        pass  # a lone surrogate from a `\ud800` escape, or a float NaN: the careful way
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode(UTF8)
    except UnicodeEncodeError:  # escape everything
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii")


def _milliseconds(value: float) -> float | None:
    # NaN or infinity would make the document invalid JSON; a clock glitch must not do that.
    return round(value, 3) if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Masking:
    card_numbers: str
    credentials: str
    request_clean: bool = False
    mapped_verbatim: bool = False  # mapped_body as forwarded, not masked again

    def text(self, text: str, content_type: str | None) -> str:
        return redact_text(
            text,
            card_numbers=self.card_numbers,
            credentials=self.credentials,
            content_type=content_type,
        )

    def binary(self, data: bytes, content_type: str | None) -> str:
        masked = redact_bytes(
            data,
            card_numbers=self.card_numbers,
            credentials=self.credentials,
            content_type=content_type,
        )
        return base64.b64encode(masked).decode("ascii")

    def request_bodies(
        self, raw: CapturedBody, mapped: CapturedBody | None, content_type: str | None
    ) -> tuple[str, str, str]:
        """(raw_body, mapped_body, body_encoding): one encoding for both, so they compare."""
        if not self.request_clean and "multipart/" in (content_type or "").lower():
            raw = CapturedBody(self.multipart(raw.data, content_type), raw.total)
        raw_text = _utf8(raw.data, truncated=raw.truncated)
        mapped_text = raw_text if mapped is None else _utf8(mapped.data, truncated=mapped.truncated)
        if raw_text is not None and mapped_text is not None:
            if self.request_clean:
                return raw_text, mapped_text, UTF8
            recorded = self.text(raw_text, content_type)
            if self.mapped_verbatim:
                return recorded, mapped_text, UTF8
            if mapped is None:
                return recorded, recorded, UTF8
            return recorded, self.text(mapped_text, content_type), UTF8
        recorded = self.binary(raw.data, content_type)
        if self.mapped_verbatim:
            forwarded = raw.data if mapped is None else mapped.data
            return recorded, base64.b64encode(forwarded).decode("ascii"), BASE64
        if mapped is None:
            return recorded, recorded, BASE64
        return recorded, self.binary(mapped.data, content_type), BASE64

    def multipart(self, data: bytes, content_type: str | None) -> bytes:
        """A multipart capture with each part masked as the guard would (both modes mask
        here); one the guard cannot frame (cut off by the capture limit) is left to the text
        scan that follows."""
        from sidecar.guard.screen import screen_body  # screen imports guard, as this does

        def redact(mode: str) -> str:
            return "off" if mode == "off" else "redact"

        try:
            return screen_body(
                data,
                content_type,
                None,
                card_numbers=redact(self.card_numbers),
                credentials=redact(self.credentials),
                route_map=None,
                max_inspect_bytes=len(data) + 1,
            ).body
        except SidecarError:
            return data

    def body(self, body: CapturedBody, content_type: str | None) -> str:
        text = _utf8(body.data, truncated=body.truncated)
        if text is None:
            return self.binary(body.data, content_type)
        return self.text(text, content_type)

    def path(self, path: str) -> str:
        """The path as events and log lines show it too (`sidecar.guard.shown`)."""
        return masked(path, cards=self.card_numbers != "off")

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        """Header values with card numbers and key secrets masked, as the path is."""
        cards = self.card_numbers != "off"
        # One look at all the values for the common case (nothing to mask): joined by a
        # character no key or card pattern crosses, so it finds what a look at each would.
        if not might_need_masking("\n".join(headers.values()), cards=cards):
            return headers
        for name, value in headers.items():
            shown = masked(value, cards=cards)
            if shown is not value:
                headers[name] = shown
        return headers

    def query(self, query: str) -> str:
        return mask_keys(self.text(query, _FORM))
