"""Pure: the data guard (SPEC §7) and route `map` rules, applied to a request body.

The guard looks for payment card numbers and credential-named fields. Per kind, the operator's
mode says what happens: `redact` masks them in the forwarded body, `reject` refuses the request
(`ForbiddenData`, 422), `off` ignores them. Which bodies are looked into depends on the type:

- JSON (`application/json`, `*/*+json`): every string, number and member name, at any depth;
  credential fields by name. Route `map` rules apply here and only here, after the guard, so a
  field is judged by the name the client sent. A body that does not parse (or nests deeper than
  `MAX_DEPTH`) is scanned as text: card numbers, and `"name": value` pairs.
- `application/x-www-form-urlencoded`: every field name and value; credential fields by name.
- `text/*`: card numbers, and credential `name=value` / `name: value` / `"name": value` pairs.
- anything else is forwarded untouched by `guard_body`: `sidecar.guard.screen` decides from the
  bytes what a body is (and refuses what it cannot read) before it calls in here.

An untouched body comes back as the very bytes object passed in; a changed JSON body is
re-serialised compactly. Findings name what was found and where, never the value.

The scan itself is in `sidecar.guard.scan` (findings, the JSON walk, `reject` mode's verdict)
and `sidecar.guard.textscan` (text, forms, JSON that does not parse).
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config import RouteMap
from sidecar.guard import jsondoc
from sidecar.guard.scan import BodyKind, Scan, enforce, walk_json, worth_scanning
from sidecar.guard.textscan import (
    charset_codec,
    guard_text,
    redact_any,
    redact_form,
    redact_plain,
)


@dataclass(frozen=True, slots=True)
class GuardResult:
    """What `guard_body` made of a body: the bytes to forward and what was found."""

    body: bytes  # the body to forward (and to record as mapped_body)
    changed: bool  # False: `body` is the original bytes object, untouched
    findings: tuple[str, ...]  # e.g. ("card_number", "credential:/user/password"); never values
    deep: bool = False  # JSON nested past MAX_DEPTH: scanned as text, not walked


def body_kind(content_type: str | None) -> BodyKind | None:
    """How the guard reads a body of this media type; None: it does not look inside."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or ("/" in media and media.endswith("+json")):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media.startswith("text/"):
        return "text"
    return None


def is_inspectable(content_type: str | None) -> bool:
    """Whether the guard looks inside bodies of this type (JSON, urlencoded forms, text/*)."""
    return body_kind(content_type) is not None


def guard_body(
    body: bytes,
    content_type: str | None,
    *,
    card_numbers: str,
    credentials: str,
    route_map: RouteMap | None,
) -> GuardResult:
    """The body to forward, after the guard and the route's `map` rules.

    Raises `ForbiddenData` when a kind in `reject` mode is found; its detail names the kind
    (and the credential fields' names), never a value. Never raises otherwise.
    """
    scan = Scan(cards=card_numbers != "off", credentials=credentials != "off")
    kind = body_kind(content_type)
    mapping = route_map is not None and bool(route_map.drop or route_map.rename)
    if not body or kind is None or not (scan.cards or scan.credentials or mapping):
        return GuardResult(body, False, ())
    as_is = charset_codec(content_type) is None  # an ASCII-compatible encoding
    if not mapping and as_is and not worth_scanning(body.decode("latin-1"), kind, scan):
        return GuardResult(body, False, ())
    new: bytes | None
    if kind == "json":
        new = _guard_json(body, scan, route_map)
    elif kind == "form":
        text = body.decode("utf-8", "surrogateescape")
        masked = redact_form(text, scan)
        new = masked.encode("utf-8", "surrogateescape") if masked is not text else None
    else:
        new = guard_text(body, content_type, scan)
    findings = tuple(scan.findings)
    enforce(findings, card_numbers=card_numbers, credentials=credentials)
    if new is None or new == body:
        return GuardResult(body, False, findings, scan.deep)
    return GuardResult(new, True, findings, scan.deep)


@dataclass(frozen=True, slots=True)
class TextResult:
    """What `guard_str` made of a decoded body: the text to forward and what was found."""

    text: str  # the text to forward: the very object passed in when nothing changed
    findings: tuple[str, ...]
    deep: bool


def guard_str(
    text: str,
    kind: BodyKind,
    *,
    card_numbers: str,
    credentials: str,
    route_map: RouteMap | None,
) -> TextResult:
    """`guard_body` for a body already decoded (UTF-16, UTF-32, a declared charset).

    Same findings, same `ForbiddenData`; a changed JSON document comes back re-serialised
    compactly, as text for the caller to encode the way the body came.
    """
    scan = Scan(cards=card_numbers != "off", credentials=credentials != "off")
    mapping = route_map is not None and bool(route_map.drop or route_map.rename)
    if not text or not (mapping or worth_scanning(text, kind, scan)):
        return TextResult(text, (), False)
    new = text
    if kind == "json":
        try:
            document = walk_json(text, scan)
        except ValueError:
            scan.restart()
            if "\\u" in text:
                scan.deep = True  # escapes only a parser decodes: not read as it will be
            new = redact_plain(text, scan, pairs=True)
        else:
            changed = scan.changed
            if route_map is not None and jsondoc.apply_route_map(document, route_map):
                changed = True
            if changed:
                new = jsondoc.dumps(document).decode("utf-8")
    elif kind == "form":
        new = redact_form(text, scan)
    else:
        new = redact_plain(text, scan, pairs=True)
    findings = tuple(scan.findings)
    enforce(findings, card_numbers=card_numbers, credentials=credentials)
    return TextResult(text if new == text else new, findings, scan.deep)


def redact_text(
    text: str, *, card_numbers: str, credentials: str, content_type: str | None = None
) -> str:
    """`text` with what the guard finds masked: for bodies kept in the audit record.

    Both `redact` and `reject` mask here (a record must not hold what the guard refused).
    A form (by type) is redacted field by field; an object or array that parses as JSON is
    walked; anything else (a truncated capture, text) gets the token scan for `"name": value`
    pairs and card masking. Unchanged text is returned as it was.
    """
    scan = Scan(cards=card_numbers != "off", credentials=credentials != "off")
    kind = body_kind(content_type)
    if not text or not (scan.cards or scan.credentials) or not worth_scanning(text, kind, scan):
        return text
    return redact_any(text, scan, kind, parse_json=True)


def redact_bytes(
    data: bytes, *, card_numbers: str, credentials: str, content_type: str | None = None
) -> bytes:
    """`redact_text` for bytes that are not UTF-8; bytes other than what is masked are kept."""
    scan = Scan(cards=card_numbers != "off", credentials=credentials != "off")
    if not data or not (scan.cards or scan.credentials):
        return data
    text = data.decode("utf-8", "surrogateescape")
    as_is = charset_codec(content_type) is None
    if as_is and not worth_scanning(text, body_kind(content_type), scan):
        return data
    masked = redact_any(text, scan, body_kind(content_type), parse_json=False)
    return data if masked is text else masked.encode("utf-8", "surrogateescape")


def _guard_json(body: bytes, scan: Scan, route_map: RouteMap | None) -> bytes | None:
    try:
        document = walk_json(body.decode("utf-8"), scan)
    except ValueError:
        scan.restart()
        text = body.decode("utf-8", "surrogateescape")
        if "\\u" in text:
            # Lenient parsers (Go, Node, JSON5) read what Python's refuses, escapes decoded:
            # a text scan cannot see an escaped digit, so this body was not read as they will.
            scan.deep = True
        masked = redact_plain(text, scan, pairs=False)
        return None if masked is text else masked.encode("utf-8", "surrogateescape")
    changed = scan.changed
    if route_map is not None and jsondoc.apply_route_map(document, route_map):
        changed = True
    return jsondoc.dumps(document) if changed else None
