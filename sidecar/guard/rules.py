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
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote_plus, unquote_plus

from sidecar.config import RouteMap
from sidecar.errors import ForbiddenData
from sidecar.guard import jsondoc
from sidecar.guard.cards import mask_cards, might_hold_cards
from sidecar.guard.credentials import (
    REDACTED,
    finding_label,
    is_credential_name,
    is_empty,
    might_name_credentials,
    redact_credential_pairs,
    redact_text_pairs,
)

CARD_FINDING = "card_number"
CREDENTIAL_FINDING = "credential"  # reported as "credential:{pointer or field name}"
MAX_DEPTH = 64
_DETAIL_FIELDS = 5

BodyKind = Literal["json", "form", "text"]


@dataclass(frozen=True, slots=True)
class GuardResult:
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
    scan = _Scan(cards=card_numbers != "off", credentials=credentials != "off")
    kind = body_kind(content_type)
    mapping = route_map is not None and bool(route_map.drop or route_map.rename)
    if not body or kind is None or not (scan.cards or scan.credentials or mapping):
        return GuardResult(body, False, ())
    as_is = _charset_codec(content_type) is None  # an ASCII-compatible encoding
    if not mapping and as_is and not _worth_scanning(body.decode("latin-1"), kind, scan):
        return GuardResult(body, False, ())
    new: bytes | None
    if kind == "json":
        new = _guard_json(body, scan, route_map)
    elif kind == "form":
        text = body.decode("utf-8", "surrogateescape")
        masked = _redact_form(text, scan)
        new = masked.encode("utf-8", "surrogateescape") if masked is not text else None
    else:
        new = _guard_text(body, content_type, scan)
    findings = tuple(scan.findings)
    enforce(findings, card_numbers=card_numbers, credentials=credentials)
    if new is None or new == body:
        return GuardResult(body, False, findings, scan.deep)
    return GuardResult(new, True, findings, scan.deep)


@dataclass(frozen=True, slots=True)
class TextResult:
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
    scan = _Scan(cards=card_numbers != "off", credentials=credentials != "off")
    mapping = route_map is not None and bool(route_map.drop or route_map.rename)
    if not text or not (mapping or _worth_scanning(text, kind, scan)):
        return TextResult(text, (), False)
    new = text
    if kind == "json":
        try:
            document = _walk_json(text, scan)
        except ValueError:
            scan.restart()
            new = _redact_plain(text, scan, pairs=True)
        else:
            changed = scan.changed
            if route_map is not None and jsondoc.apply_route_map(document, route_map):
                changed = True
            if changed:
                new = jsondoc.dumps(document).decode("utf-8")
    elif kind == "form":
        new = _redact_form(text, scan)
    else:
        new = _redact_plain(text, scan, pairs=True)
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
    scan = _Scan(cards=card_numbers != "off", credentials=credentials != "off")
    kind = body_kind(content_type)
    if not text or not (scan.cards or scan.credentials) or not _worth_scanning(text, kind, scan):
        return text
    return _redact_any(text, scan, kind, parse_json=True)


def redact_bytes(
    data: bytes, *, card_numbers: str, credentials: str, content_type: str | None = None
) -> bytes:
    """`redact_text` for bytes that are not UTF-8; bytes other than what is masked are kept."""
    scan = _Scan(cards=card_numbers != "off", credentials=credentials != "off")
    if not data or not (scan.cards or scan.credentials):
        return data
    text = data.decode("utf-8", "surrogateescape")
    as_is = _charset_codec(content_type) is None
    if as_is and not _worth_scanning(text, body_kind(content_type), scan):
        return data
    masked = _redact_any(text, scan, body_kind(content_type), parse_json=False)
    return data if masked is text else masked.encode("utf-8", "surrogateescape")


def _worth_scanning(text: str, kind: BodyKind | None, scan: _Scan) -> bool:
    """The fast path, for most bodies: no run of 13 digits and no credential word anywhere
    means nothing to find, without parsing. Bodies that could spell a name or a digit in an
    escape (JSON `\\u`, form `%` or `+`) always get the full scan."""
    if "\\u" in text or (kind == "form" and ("%" in text or "+" in text)):
        return True
    if scan.cards and might_hold_cards(text):
        return True
    return scan.credentials and might_name_credentials(text)


@dataclass(slots=True)
class _Scan:
    """One body's walk: what to look for, what was found, whether anything changed."""

    cards: bool
    credentials: bool
    findings: list[str] = field(default_factory=list)
    changed: bool = False
    deep: bool = False  # a JSON walk gave up on nesting (kept across `restart`)
    _path: list[str] = field(default_factory=list)

    def restart(self) -> None:
        """Forget a walk that was abandoned (the body is then scanned as text instead)."""
        self.findings.clear()
        self.changed = False
        self._path.clear()

    def found(self, finding: str) -> None:
        if finding not in self.findings:
            self.findings.append(finding)

    def found_credential(self, where: str) -> None:
        self.found(f"{CREDENTIAL_FINDING}:{finding_label(where)}")

    def text(self, text: str) -> str:
        if not self.cards:
            return text
        masked, found = mask_cards(text)
        if found:
            self.found(CARD_FINDING)
            self.changed = True
        return masked

    def value(self, value: object, depth: int) -> object:
        """A parsed JSON value, walked: members as dicts, findings masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, jsondoc.Number):
            masked = self.text(value.text)
            return value if masked == value.text else masked
        if depth > MAX_DEPTH:
            raise _TooDeep
        if isinstance(value, jsondoc.Members):
            return self._members(value, depth)
        if isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                self._path.append(str(index))
                items.append(self.value(item, depth + 1))
                self._path.pop()
            return items
        return value  # true, false, null

    def _members(self, members: jsondoc.Members, depth: int) -> dict[str, object]:
        result: dict[str, object] = {}
        for name, item in members:
            self._path.append(name)
            if self.credentials and is_credential_name(name) and not is_empty(item):
                self.found_credential(jsondoc.pointer(self._path))
                result[self.text(name)] = REDACTED
                self.changed = True
            else:
                result[self.text(name)] = self.value(item, depth + 1)
            self._path.pop()
        if len(result) != len(members) and (self.cards or self.credentials):
            # A repeated name: forward what was inspected, not a body that parsers may read
            # differently (first or last wins) from the way it was inspected.
            self.changed = True
        return result


class _TooDeep(Exception):
    pass


def _walk_json(text: str, scan: _Scan) -> object:
    """The walked document, or raises ValueError when `text` is not JSON the walk can take."""
    try:
        return scan.value(jsondoc.loads(text), 1)
    except (RecursionError, _TooDeep):
        scan.deep = True
        raise ValueError("nested too deeply") from None


def _guard_json(body: bytes, scan: _Scan, route_map: RouteMap | None) -> bytes | None:
    try:
        document = _walk_json(body.decode("utf-8"), scan)
    except ValueError:
        scan.restart()
        text = body.decode("utf-8", "surrogateescape")
        masked = _redact_plain(text, scan, pairs=False)
        return None if masked is text else masked.encode("utf-8", "surrogateescape")
    changed = scan.changed
    if route_map is not None and jsondoc.apply_route_map(document, route_map):
        changed = True
    return jsondoc.dumps(document) if changed else None


def _guard_text(body: bytes, content_type: str | None, scan: _Scan) -> bytes | None:
    if not (scan.cards or scan.credentials):
        return None
    codec = _charset_codec(content_type)
    if codec is not None:
        # Charsets where a digit byte may be half of another character (UTF-16, GB18030):
        # read them as declared. Everything else is ASCII-compatible and read byte-exactly.
        try:
            text = body.decode(codec)
            masked = _redact_plain(text, scan, pairs=True)
            return None if masked == text else masked.encode(codec)
        except UnicodeError:
            pass
    text = body.decode("utf-8", "surrogateescape")
    masked = _redact_plain(text, scan, pairs=True)
    return None if masked == text else masked.encode("utf-8", "surrogateescape")


_READ_AS_IS = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252"})


def _charset_codec(content_type: str | None) -> str | None:
    """The declared charset's codec name when it must be decoded to find digits, else None."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            try:
                codec = codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                return None
            return None if codec in _READ_AS_IS else codec
    return None


def _redact_any(text: str, scan: _Scan, kind: BodyKind | None, *, parse_json: bool) -> str:
    if kind == "form":
        return _redact_form(text, scan)
    if parse_json and text.lstrip()[:1] in ("{", "["):
        try:
            document = _walk_json(text, scan)
        except ValueError:
            scan.restart()
        else:
            return jsondoc.dumps(document).decode("utf-8") if scan.changed else text
    # Not JSON: plain `name=value` pairs too (text, untyped bodies, truncated captures).
    return _redact_plain(text, scan, pairs=kind != "json")


def _redact_plain(text: str, scan: _Scan, *, pairs: bool) -> str:
    """Text that may be JSON-like: credential `"name": value` pairs (and, for `pairs`, plain
    `name=value` / `name: value` ones), then card numbers."""
    masked = text
    if scan.credentials:
        masked = redact_credential_pairs(masked, scan.found_credential)
        if pairs:
            masked = redact_text_pairs(masked, scan.found_credential)
    masked = scan.text(masked)
    return text if masked == text else masked


def _redact_form(text: str, scan: _Scan) -> str:
    """A urlencoded form with card numbers and credential fields redacted, field by field.

    Fields that need no change keep their exact original encoding.
    """
    fields = text.split("&")
    changed = False
    for index, field_text in enumerate(fields):
        raw_name, equals, raw_value = field_text.partition("=")
        name = _unquote(raw_name)
        value = _unquote(raw_value)
        new_name, new_value = scan.text(name), scan.text(value)
        if scan.credentials and equals and is_credential_name(name) and not is_empty(value):
            scan.found_credential(_readable(name))
            new_value = REDACTED
        if new_name != name or new_value != value:
            fields[index] = _quote(new_name) + equals + _quote(new_value)
            changed = True
    return "&".join(fields) if changed else text


def _unquote(text: str) -> str:
    return unquote_plus(text, encoding="utf-8", errors="surrogateescape")


def _quote(text: str) -> str:
    # `*` is left as is by the WHATWG urlencoded serializer, so masks stay readable.
    return quote_plus(text, safe="*", encoding="utf-8", errors="surrogateescape")


def _readable(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def enforce(findings: tuple[str, ...], *, card_numbers: str, credentials: str) -> None:
    if card_numbers == "reject" and CARD_FINDING in findings:
        raise ForbiddenData("the request body contains a payment card number")
    prefix = CREDENTIAL_FINDING + ":"
    fields = [finding.removeprefix(prefix) for finding in findings if finding.startswith(prefix)]
    if credentials == "reject" and fields:
        shown = ", ".join(fields[:_DETAIL_FIELDS]) + (", …" if len(fields) > _DETAIL_FIELDS else "")
        what = "a credential field" if len(fields) == 1 else "credential fields"
        raise ForbiddenData(f"the request body contains {what} ({shown})")
