"""Pure: the API key format, its checksum, generation and parsing (hashing: `keys.hashing`).

A key reads `{prefix}_{environment}_{id}_{secret}{checksum}`:
- `id`: 96 random bits in base62 (17 characters), public: it appears in logs and events;
- `secret`: 256 random bits in base62 (43 characters);
- `checksum`: the base62 CRC32 (6 characters) of everything before it, so a typo or a
  truncated paste is refused without touching Redis, and secret scanners can match the shape.

Nothing here ever puts a key string into an exception message.
"""

from __future__ import annotations

import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

from sidecar.config import SCOPE_SHAPE
from sidecar.guard.keyshapes import CHECKSUM_CHARS, ID_BYTES, ID_CHARS, SECRET_BYTES, SECRET_CHARS
from sidecar.guard.keyshapes import KEY_PATTERN as KEY_PATTERN  # the shape, re-exported
from sidecar.guard.keyshapes import mask_keys as mask_keys

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SHAPE = re.compile(
    rf"([a-z][a-z0-9]{{0,15}})_([a-z0-9]{{1,16}})_([0-9A-Za-z]{{{ID_CHARS}}})"
    rf"_([0-9A-Za-z]{{{SECRET_CHARS}}})([0-9A-Za-z]{{{CHECKSUM_CHARS}}})"
)
# SPEC §14: a key's name and its service. Matched whole (`fullmatch`), never with `$`, which
# also matches before a trailing newline. No `{` or `}`: a name is part of a Redis key under
# the `{keys}` hash tag, and a brace there would move it to another cluster slot.
NAME_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_NAME_RULE = "use 1-64 letters, digits, '.', '_', ':' or '-'"
_SCOPE_RULE = "use resource:action, resource:* or * (1-64 letters, digits, '.', '_', '-')"


def check_name(text: str) -> str:
    """`text` as a key name or service; ValueError saying what is wrong with it otherwise."""
    if NAME_SHAPE.fullmatch(text) is None:
        raise ValueError(f"{shown(text)} is not a name: {_NAME_RULE}")
    return text


def check_scope(text: str) -> str:
    """`text` as a scope; ValueError saying what is wrong with it otherwise."""
    if SCOPE_SHAPE.fullmatch(text) is None:
        raise ValueError(f"{shown(text)} is not a scope: {_SCOPE_RULE}")
    return text


def shown(text: str, limit: int = 70) -> str:
    """`text` quoted for an error message: control characters escaped (repr), long values cut."""
    if len(text) > limit:
        return f"{text[:limit]!r}… ({len(text)} characters)"
    return repr(text)


class MalformedKey(ValueError):
    """The presented string is not a well-formed key (shape, prefix or checksum)."""


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A well-formed key's parts; its repr never shows the secret."""

    prefix: str
    environment: str
    key_id: str
    secret: str  # the secret with its checksum: what the argon2 hash covers

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"ParsedKey({self.prefix}_{self.environment}_{self.key_id}_…)"


def encode_base62(value: int, width: int) -> str:
    """Fixed-width base62, most significant digit first."""
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    if value:
        raise ValueError("value does not fit the width")
    return "".join(reversed(digits))


def checksum(text: str) -> str:
    """The base62 CRC32 of `text`: the last characters of a key."""
    return encode_base62(zlib.crc32(text.encode("ascii")), CHECKSUM_CHARS)


def _random_base62(n_bytes: int, width: int) -> str:
    return encode_base62(int.from_bytes(secrets.token_bytes(n_bytes), "big"), width)


def generate_key(prefix: str, environment: str) -> tuple[str, ParsedKey]:
    """A new key string (to show once) and its parsed parts."""
    key_id = _random_base62(ID_BYTES, ID_CHARS)
    body = f"{prefix}_{environment}_{key_id}_{_random_base62(SECRET_BYTES, SECRET_CHARS)}"
    key = body + checksum(body)
    return key, parse_key(key, prefix)


def parse_key(text: str, prefix: str) -> ParsedKey:
    """Split a presented key into its parts; raise `MalformedKey` for any defect."""
    match = _SHAPE.fullmatch(text)  # not .match: `$` would let a trailing newline through
    if match is None:
        raise MalformedKey("not a well-formed API key")
    key_prefix, environment, key_id, secret, check = match.groups()
    if key_prefix != prefix:
        raise MalformedKey("the key prefix is not this sidecar's")
    if not hmac.compare_digest(check, checksum(text[:-CHECKSUM_CHARS])):
        raise MalformedKey("the key checksum does not match")
    return ParsedKey(key_prefix, environment, key_id, secret + check)
