"""Pure: the data guard's scans of text and urlencoded forms, and of JSON that does not parse
(a truncated capture, a body nested too deep): `"name": value` pairs, `name=value` pairs,
card numbers; forms field by field, keeping the encoding of fields left alone.
"""

from __future__ import annotations

import codecs
import re
from urllib.parse import quote_plus, unquote_plus

from sidecar.guard import jsondoc
from sidecar.guard.credentials import (
    REDACTED,
    is_credential_name,
    is_empty,
    redact_credential_pairs,
    redact_text_pairs,
)
from sidecar.guard.scan import BodyKind, Scan, walk_json


def guard_text(body: bytes, content_type: str | None, scan: Scan) -> bytes | None:
    """A `text/*` body masked in its declared charset, or None when nothing changed."""
    if not (scan.cards or scan.credentials):
        return None
    codec = charset_codec(content_type)
    if codec is not None:
        # Charsets where a digit byte may be half of another character (UTF-16, GB18030):
        # read them as declared. Everything else is ASCII-compatible and read byte-exactly.
        try:
            text = body.decode(codec)
            masked = redact_plain(text, scan, pairs=True)
            return None if masked == text else masked.encode(codec)
        except UnicodeError:
            pass
    text = body.decode("utf-8", "surrogateescape")
    masked = redact_plain(text, scan, pairs=True)
    return None if masked == text else masked.encode("utf-8", "surrogateescape")


_READ_AS_IS = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252"})


def charset_codec(content_type: str | None) -> str | None:
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


def redact_any(text: str, scan: Scan, kind: BodyKind | None, *, parse_json: bool) -> str:
    """Text of any kind masked: a form by field, JSON (when `parse_json`) walked, else pairs."""
    if kind == "form":
        return redact_form(text, scan)
    if parse_json and text.lstrip()[:1] in ("{", "["):
        try:
            document = walk_json(text, scan)
        except ValueError:
            scan.restart()
        else:
            return jsondoc.dumps(document).decode("utf-8") if scan.changed else text
    # Not JSON: plain `name=value` pairs too (text, untyped bodies, truncated captures).
    return redact_plain(text, scan, pairs=kind != "json")


def redact_plain(text: str, scan: Scan, *, pairs: bool) -> str:
    """Text that may be JSON-like: credential `"name": value` pairs (and, for `pairs`, plain
    `name=value` / `name: value` ones), then card numbers."""
    masked = text
    if scan.credentials:
        masked = redact_credential_pairs(masked, scan.found_credential)
        if pairs:
            masked = redact_text_pairs(masked, scan.found_credential)
    masked = scan.text(masked)
    return text if masked == text else masked


def redact_form(text: str, scan: Scan) -> str:
    """A urlencoded form with card numbers and credential fields redacted, field by field.

    Fields that need no change keep their exact original encoding.
    """
    # `;` separates fields too for Rack 2, Perl's CGI.pm and Python's parse_qs before 3.9.2:
    # split on both, keeping each separator so unchanged fields stay byte-exact.
    fields = _FIELD_SEPARATORS.split(text)
    changed = False
    for index, field_text in enumerate(fields):
        if index % 2:
            continue  # a separator
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
    return "".join(fields) if changed else text


_FIELD_SEPARATORS = re.compile(r"([&;])")


def _unquote(text: str) -> str:
    return unquote_plus(text, encoding="utf-8", errors="surrogateescape")


def _quote(text: str) -> str:
    # `*` is left as is by the WHATWG urlencoded serializer, so masks stay readable.
    return quote_plus(text, safe="*", encoding="utf-8", errors="surrogateescape")


def _readable(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
