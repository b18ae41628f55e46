"""Pure: which field names hold credentials, and masking them in JSON-like text.

A name is compared case-insensitively with `-`, `_` and spaces ignored, so `clientSecret`,
`client_secret` and `Client-Secret` are one name; for bracketed or dotted form names
(`user[password]`, `user.password`) the last part is the field's name.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

from sidecar.guard.cards import mask_cards

REDACTED = "[REDACTED]"

CREDENTIAL_NAMES = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "clientsecret",
        "secretkey",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "apikey",
        "authorization",
        "privatekey",
        "credential",
        "credentials",
        # Card verification codes: PCI DSS forbids keeping them after authorisation.
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
    }
)
CREDENTIAL_SUFFIXES = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "credential",
    "credentials",
)
# Named like tokens, yet opaque cursors that paginated APIs need forwarded verbatim.
NOT_CREDENTIALS = frozenset(
    {
        "pagetoken",
        "nextpagetoken",
        "prevpagetoken",
        "previouspagetoken",
        "nexttoken",
        "continuationtoken",
        "idempotencytoken",
    }
)

# A superset test for the fast path: every name `is_credential_name` accepts contains one of
# these anchors once lower-cased with `-`, `_` and spaces removed. Plain substring searches
# run in C; a regex alternation of every name cost 10% of a request.
_ANCHORS = ("pass", "pwd", "secret", "token", "apikey", "auth", "privatekey", "credential", "cv")
assert all(
    any(anchor in word for anchor in _ANCHORS)
    for word in CREDENTIAL_NAMES | set(CREDENTIAL_SUFFIXES)
), "every credential name must contain an anchor"

# Headers that carry credentials: never in the audit record or a log line.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def might_name_credentials(text: str) -> bool:
    """False only when no field in `text` can be credential-named: lets the guard skip the
    parse and walk for the common body. (Escaped names are the caller's to rule out.)"""
    squeezed = text.lower().replace("-", "").replace("_", "").replace(" ", "")
    return any(anchor in squeezed for anchor in _ANCHORS)


_NAME_PARTS = re.compile(r"[\[\].]+")
_IGNORED = re.compile(r"[-_ ]+")
_LABEL_MAX = 100


@functools.lru_cache(maxsize=4096)  # header and field names repeat from request to request
def is_credential_name(name: str) -> bool:
    """Whether a field with this name holds a credential (its value is redacted, whatever it is)."""
    # `password[0]`, `user[password]`: PHP, Rack and `qs` read these as the field `password`;
    # PHP reads `pass.word` as `pass_word`. Every part is judged, and the whole name.
    candidates = [part for part in _NAME_PARTS.split(name) if part]
    candidates.append(name.replace(".", "_").replace("[", "_").replace("]", "_"))
    return any(_names_credential(candidate) for candidate in candidates)


def _names_credential(name: str) -> bool:
    key = _IGNORED.sub("", name.lower())
    if not key or key in NOT_CREDENTIALS:
        return False
    return key in CREDENTIAL_NAMES or key.endswith(CREDENTIAL_SUFFIXES)


def is_empty(value: object) -> bool:
    """A value that carries no secret: nothing to redact, nothing to reject."""
    if value is None or value == "" or value == REDACTED:
        return True
    return isinstance(value, dict | list) and not value


def finding_label(name: str) -> str:
    """A field name or pointer fit for a finding: bounded, and never showing a card number.

    A long one keeps its end: the field's own name says more than the way to it.
    """
    label, _ = mask_cards(name)
    return label if len(label) <= _LABEL_MAX else "…" + label[1 - _LABEL_MAX :]


# Text the JSON walk could not take (not JSON, cut off by the capture limit, nested too deep) is
# scanned as tokens: a string followed by `:` is a member name, and its value's extent is found
# by matching brackets outside strings. An unterminated value runs to the end of the text.
_STRING = re.compile(r'"(?:[^"\\]+|\\.)*', re.DOTALL)
_STRUCTURE = re.compile(r'["{}\[\]]')
_SCALAR_END = re.compile(r"[\s,}\]]")
_SPACE = re.compile(r"\s*")
_EMPTY_VALUES = frozenset({"", '""', "null", "[]", "{}", json.dumps(REDACTED)})


def redact_credential_pairs(text: str, found: Callable[[str], None]) -> str:
    """JSON-like text with the value of every credential-named member replaced by "[REDACTED]".

    `found` is called with each redacted member's name. Indifferent to validity: truncated or
    malformed JSON is scanned as far as it goes.
    """
    pieces: list[str] = []
    copied = 0
    position = 0
    length = len(text)
    while (quote := text.find('"', position)) >= 0:
        end = _string_end(text, quote)
        colon = _skip_space(text, end)
        if colon >= length or text[colon] != ":":
            position = end
            continue
        position = colon + 1  # on into the value: members nested in it are scanned too
        name = _member_name(text[quote:end])
        if not is_credential_name(name):
            continue
        start = _skip_space(text, colon + 1)
        value_end = _value_end(text, start)
        if text[start:value_end].strip() in _EMPTY_VALUES:
            continue
        found(name)
        pieces.append(text[copied:start])
        pieces.append(json.dumps(REDACTED))
        copied = position = value_end
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


# Plain text: `name=value` and `name: value` pairs (config lines, log lines, a form pasted
# as text/plain). The name is bounded, so each start position costs a bounded match: linear.
_TEXT_PAIR = re.compile(
    r"(?<![\w.\[\]-])([A-Za-z_][\w.\[\]-]{0,63})[ \t]*[=:][ \t]*"
    r"(\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s&;,\"']+)"
)


def redact_text_pairs(text: str, found: Callable[[str], None]) -> str:
    """Text with the value of every credential-named `name=value` / `name: value` pair
    replaced by [REDACTED]; `found` is called with each name."""

    def replace(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if not is_credential_name(name) or value.strip("\"'") in ("", REDACTED):
            return match.group(0)
        found(name)
        return match.group(0)[: match.start(2) - match.start(0)] + REDACTED

    masked = _TEXT_PAIR.sub(replace, text)
    return text if masked == text else masked


def _skip_space(text: str, position: int) -> int:
    match = _SPACE.match(text, position)
    return match.end() if match else position


def _string_end(text: str, quote: int) -> int:
    """The index just past the string starting at `quote` (the text's end if unterminated)."""
    match = _STRING.match(text, quote)
    end = match.end() if match else quote + 1
    return end + 1 if end < len(text) and text[end] == '"' else len(text)


def _value_end(text: str, start: int) -> int:
    if start >= len(text):
        return start
    first = text[start]
    if first == '"':
        return _string_end(text, start)
    if first not in "{[":
        match = _SCALAR_END.search(text, start)
        return match.start() if match else len(text)
    depth = 0
    position = start
    while match := _STRUCTURE.search(text, position):
        char = match.group()
        if char == '"':
            position = _string_end(text, match.start())
            continue
        depth += 1 if char in "{[" else -1
        position = match.end()
        if depth == 0:
            return position
    return len(text)


def _member_name(literal: str) -> str:
    if "\\" not in literal:
        return literal.strip('"')  # nothing escaped: skip the parser
    try:
        name = json.loads(literal)
    except ValueError:
        return literal.strip('"')
    return name if isinstance(name, str) else literal
