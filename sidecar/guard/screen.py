"""Pure: the data guard's entry point, failing closed (SPEC §14).

`screen_body` promises, for every request body the proxy holds:

- what the body is comes from its bytes as much as its headers: `Content-Encoding` undone
  (bounded, `sidecar.guard.inflate`), JSON in any RFC 8259 encoding, text in its charset,
  multipart part by part, and anything untyped or unknown sniffed (JSON, form, text) or else
  scanned as bytes for card numbers (`sidecar.guard.sniff`, `cards.mask_cards_in_bytes`);
- a body it cannot read raises `UninspectableBody` (415) when either kind is in `reject` mode,
  and otherwise comes back unchanged with `inspected=False` and a note saying why;
- JSON nested past `MAX_DEPTH` is scanned as text: refused (415) in `reject` mode, since the
  walk that names fields could not run; forwarded as scanned, `inspected=False`, otherwise;
- `body` is exactly what must go upstream: the original bytes object when nothing changed
  (the compressed bytes, for a compressed body), else the masked body in the encoding and
  with the content codings it came in.

Findings name kinds and fields, never values (see `sidecar.guard.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sidecar.config import RouteMap
from sidecar.errors import UninspectableBody
from sidecar.guard import inflate, multipart, sniff
from sidecar.guard.cards import mask_cards_in_bytes
from sidecar.guard.credentials import REDACTED, finding_label, is_credential_name
from sidecar.guard.rules import guard_body, guard_str
from sidecar.guard.scan import CARD_FINDING, CREDENTIAL_FINDING, MAX_DEPTH, BodyKind, enforce

MAX_MULTIPART_NESTING = 3
JSON = "application/json"
FORM = sniff.FORM_MEDIA
_REDACTED_BYTES = REDACTED.encode("ascii")


@dataclass(frozen=True, slots=True)
class Screened:
    """What `screen_body` made of a body: what to forward, what was found, whether all was read."""

    body: bytes  # what goes upstream (and is recorded as mapped_body)
    changed: bool  # False: `body` is the bytes object passed in
    findings: tuple[str, ...]
    inspected: bool  # the guard read the whole body as the upstream will
    note: str | None = None  # why not, for the log line (never content)


@dataclass(frozen=True, slots=True)
class _Modes:
    card_numbers: str
    credentials: str

    @property
    def reject(self) -> bool:
        return "reject" in (self.card_numbers, self.credentials)


def screen_body(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    *,
    card_numbers: str,
    credentials: str,
    route_map: RouteMap | None,
    max_inspect_bytes: int,
) -> Screened:
    """The body to forward. Raises `ForbiddenData` (422) or `UninspectableBody` (415)."""
    modes = _Modes(card_numbers, credentials)
    mapping = route_map is not None and bool(route_map.drop or route_map.rename)
    if not body:
        return Screened(body, False, (), inspected=True)
    if card_numbers == "off" and credentials == "off" and not mapping:
        return Screened(body, False, (), inspected=False, note="data guard off")
    try:
        applied = inflate.codings(content_encoding)
        plain = inflate.inflate(body, applied, max_inspect_bytes) if applied else body
        result = _screen(plain, content_type, modes, route_map, depth=0)
        if applied:
            # SPEC §12 forwards compressed bodies as they are: unchanged, the very bytes that
            # came in go on. Masked, the body is compressed again with the same codings, so
            # the Content-Encoding forwarded still describes the bytes sent. (Refusing instead
            # would make redact mode refuse every compressed body holding a card, which is
            # what reject mode is for.)
            forwarded = inflate.compress(result.body, applied) if result.changed else body
            result = replace(result, body=forwarded)
    except sniff.Undecodable as exc:
        if modes.reject:
            raise UninspectableBody(f"the data guard cannot inspect this body: {exc}") from None
        return Screened(body, False, (), inspected=False, note=f"not inspected: {exc}")
    if not result.inspected and modes.reject:
        raise UninspectableBody(f"the data guard cannot inspect this body: {result.note}")
    return result


def _screen(
    data: bytes, content_type: str | None, modes: _Modes, route_map: RouteMap | None, depth: int
) -> Screened:
    """One body or part, decoded: judged by its declared kind, else by its bytes."""
    if not data:
        return Screened(data, False, (), inspected=True)
    media = sniff.media_type(content_type)
    kind = sniff.declared_kind(media)
    declared = sniff.charset(content_type)
    if kind == "multipart":
        return _multipart(data, content_type, modes, depth)
    if kind == "form" and not sniff.reads_as_is(declared):
        # Form parsers (WHATWG) read the bytes as UTF-8 whatever the label says: a label that
        # would make the guard read another text is refused, not followed.
        raise sniff.Undecodable("the declared charset disagrees with how forms are read")
    if kind in ("json", "form") and _plain_utf8_start(data) and sniff.reads_as_is(declared):
        # The common case, unchanged: UTF-8 (or an ASCII superset) JSON or form, with
        # guard_body's fast path for bodies that cannot hold a finding.
        result = guard_body(
            data,
            JSON if kind == "json" else FORM,
            card_numbers=modes.card_numbers,
            credentials=modes.credentials,
            route_map=route_map,
        )
        screened = Screened(result.body, result.changed, result.findings, not result.deep)
        if result.deep:
            screened = replace(screened, note=_DEEP)
        return _net(screened, modes)
    if kind == "json":
        return _decoded(data, sniff.decode_json(data, declared), "json", modes, route_map)
    decoded = sniff.decode(data, declared)
    if decoded is None and kind == "text":
        # Declared text that is not UTF-8 and names no charset: read byte-exactly, as before
        # (the zero-byte net below still sees wide digits).
        decoded = sniff.Decoded(data.decode("utf-8", "surrogateescape"), sniff.AS_IS, b"")
    if decoded is None:
        return _binary(data, modes)
    as_kind: BodyKind = "form" if kind == "form" else "text"
    if decoded.text.lstrip()[:1] in ("{", "["):
        as_kind = "json"  # whatever the label says: JSON is walked as JSON
    elif kind is None and decoded.codec == sniff.AS_IS and sniff.looks_like_form(data):
        as_kind = "form"
    return _decoded(data, decoded, as_kind, modes, route_map if as_kind == "json" else None)


_WIDE_OR_MARKED = frozenset(b"\x00\xef\xfe\xff")


def _plain_utf8_start(data: bytes) -> bool:
    """No byte-order mark and none of the zero bytes UTF-16/32 start with: the bytes are read
    as UTF-8 (RFC 8259 §8.1). One check of four bytes, for the common case on the hot path."""
    return not _WIDE_OR_MARKED.intersection(data[:4])


_DEEP = (
    f"JSON the walk could not read (nested deeper than {MAX_DEPTH} levels, or not parseable "
    "with \\u escapes), scanned as text"
)


def _decoded(
    data: bytes,
    decoded: sniff.Decoded,
    kind: BodyKind,
    modes: _Modes,
    route_map: RouteMap | None,
) -> Screened:
    result = guard_str(
        decoded.text,
        kind,
        card_numbers=modes.card_numbers,
        credentials=modes.credentials,
        route_map=route_map,
    )
    changed = result.text is not decoded.text
    body = decoded.encode(result.text) if changed else data
    screened = Screened(
        body, changed, result.findings, not result.deep, _DEEP if result.deep else None
    )
    return _net(screened, modes, wide=decoded.codec != sniff.AS_IS)


def _net(screened: Screened, modes: _Modes, *, wide: bool = False) -> Screened:
    """The bytes, scanned once more for card numbers when another reader could see digits
    the decoded scan did not: text decoded from UTF-16/32 or a declared charset, or any body
    with zero bytes in it. UTF-8 bodies without zero bytes skip it (one memchr)."""
    if modes.card_numbers == "off" or not (wide or b"\0" in screened.body):
        return screened
    masked, found = mask_cards_in_bytes(screened.body)
    if not found:
        return screened
    findings = _merge(screened.findings, (CARD_FINDING,))
    enforce(findings, card_numbers=modes.card_numbers, credentials=modes.credentials)
    return replace(screened, body=masked, changed=True, findings=findings)


def _binary(data: bytes, modes: _Modes) -> Screened:
    """Bytes that are no text: card numbers written in ASCII digits are all there is to find."""
    if modes.reject and data.lstrip()[:1] in (b"{", b"[") and b"\\u" in data:
        # JSON with a stray non-UTF-8 byte: lenient parsers (Go, Node) replace the byte and
        # read the rest, escapes decoded, where a byte scan sees no escaped digit.
        raise sniff.Undecodable("JSON-like bytes that are not UTF-8")
    if modes.card_numbers == "off":
        return Screened(data, False, (), inspected=True)
    masked, found = mask_cards_in_bytes(data)
    if not found:
        return Screened(data, False, (), inspected=True)
    enforce((CARD_FINDING,), card_numbers=modes.card_numbers, credentials=modes.credentials)
    return Screened(masked, True, (CARD_FINDING,), inspected=True)


def _multipart(data: bytes, content_type: str | None, modes: _Modes, depth: int) -> Screened:
    """Each part judged by its own headers and bytes; credential-named fields redacted."""
    if depth >= MAX_MULTIPART_NESTING:
        raise sniff.Undecodable(f"multipart nested more than {MAX_MULTIPART_NESTING} deep")
    boundary = multipart.boundary(content_type)
    parts = multipart.split(data, boundary)
    contents: dict[int, bytes] = {}
    findings: tuple[str, ...] = ()
    inspected, note = True, None
    for index, part in enumerate(parts):
        content = data[part.start : part.end]
        name = part.field_name
        if (
            modes.credentials != "off"
            and name is not None
            and is_credential_name(name)
            and content.strip() not in (b"", _REDACTED_BYTES)
        ):
            findings = _merge(findings, (f"{CREDENTIAL_FINDING}:{finding_label(name)}",))
            enforce(findings, card_numbers=modes.card_numbers, credentials=modes.credentials)
            contents[index] = _REDACTED_BYTES
            continue
        result = _screen(content, part.content_type, modes, None, depth + 1)
        findings = _merge(findings, result.findings)
        if not result.inspected:
            inspected, note = False, result.note
        if result.changed:
            contents[index] = result.body
    if not contents:
        return Screened(data, False, findings, inspected, note)
    joined = multipart.join(data, parts, contents, boundary)
    return Screened(joined, True, findings, inspected, note)


def _merge(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(finding for finding in second if finding not in first)
