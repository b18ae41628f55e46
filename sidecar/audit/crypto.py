"""Encryption at rest of the audit record's bodies (SPEC §7): AES-256-GCM, rotatable keys.

The key file (`audit.encryption_key_file`) holds one key per line, `KEY_ID:BASE64_OF_32_BYTES`;
blank lines and `#` comments are ignored. The first key encrypts; every key decrypts, so a key is
rotated by putting a new line first and keeping the old one for as long as its records are kept.

A body becomes `enc:v1:{key_id}:{base64(nonce + ciphertext + tag)}` with a random 96-bit nonce;
the key id is bound into the tag (as associated data), so a token cannot be relabelled.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sidecar.errors import ConfigError

SEALED_PREFIX = "enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_AAD_PREFIX = b"sidecar-audit-v1:"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")  # \Z: `$` also matches before a newline
_TOKEN = re.compile(r"^enc:v1:([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/]*={0,2})\Z")
_CONFIG_KEY = "audit.encryption_key_file"

# The record fields that hold bodies: (section, field).
BODY_FIELDS = (("request", "raw_body"), ("request", "mapped_body"), ("response", "body"))


class BodyCipher:
    """Encrypts record bodies with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _KEY_ID.match(key_id):
                raise ValueError("a key id is 1-32 characters of A-Z, a-z, 0-9, '_' and '-'")
            if len(key) != KEY_BYTES:
                raise ValueError(f"an AES-256 key is {KEY_BYTES} bytes")
            if key_id in self._keys:
                raise ValueError(f"key id {key_id!r} appears twice")
            self._keys[key_id] = AESGCM(key)
        self.key_id = keys[0][0]  # the one that encrypts

    @classmethod
    def from_file(cls, path: Path) -> BodyCipher:
        """The keys in `path`; `ConfigError` naming every problem, never showing key material."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError([f"{_CONFIG_KEY}: cannot read {path} ({reason})"]) from None
        keys, problems = _parse_key_lines(text)
        if not keys and not problems:
            problems.append("holds no key (expected lines of KEY_ID:BASE64_OF_32_BYTES)")
        if problems:
            raise ConfigError([f"{_CONFIG_KEY}: {path}: {problem}" for problem in problems])
        return cls(keys)

    def encrypt(self, text: str) -> str:
        """`text` sealed with the current key (AES-GCM, fresh nonce): a `SEALED_PREFIX` token."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.key_id].encrypt(nonce, text.encode("utf-8"), _aad(self.key_id))
        return f"{SEALED_PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, token: str) -> str:
        """The text sealed in `token`; ValueError if it is malformed, its key is unknown or it
        was altered in any way."""
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError("not an encrypted audit body (enc:v1:KEY_ID:BASE64)")
        key_id, encoded = match.groups()
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise ValueError(f"audit body encrypted with key {key_id!r}, which the key file lacks")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError("encrypted audit body: malformed base64") from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise ValueError("encrypted audit body: too short")
        try:
            plain = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(key_id))
        except InvalidTag:
            raise ValueError("encrypted audit body failed authentication (altered?)") from None
        return plain.decode("utf-8")

    def encrypt_record(self, record: Mapping[str, object]) -> dict[str, object]:
        """A copy of `record` with its body fields encrypted; every other field untouched."""
        return _map_bodies(record, self.encrypt)

    def decrypt_record(self, record: Mapping[str, object]) -> dict[str, object]:
        """The inverse of `encrypt_record`; body fields that are not tokens pass unchanged (a
        record written before encryption was turned on). ValueError as `decrypt`."""
        return _map_bodies(record, self._decrypt_if_token)

    def _decrypt_if_token(self, value: str) -> str:
        return self.decrypt(value) if value.startswith(SEALED_PREFIX) else value


def generate_key_line(key_id: str) -> str:
    """A fresh key file line, `key_id:base64(32 random bytes)`, for operators."""
    if not _KEY_ID.match(key_id):
        raise ValueError("a key id is 1-32 characters of A-Z, a-z, 0-9, '_' and '-'")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"


def _aad(key_id: str) -> bytes:
    return _AAD_PREFIX + key_id.encode("ascii")


def _parse_key_lines(text: str) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(keys in file order, problems); a problem names its line, never what is on it."""
    keys: list[tuple[str, bytes]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, colon, encoded = (part.strip() for part in line.partition(":"))
        if not colon:
            problems.append(f"line {number}: expected KEY_ID:BASE64_OF_32_BYTES")
            continue
        if not _KEY_ID.match(key_id):
            problems.append(
                f"line {number}: the key id must be 1-32 characters of A-Z, a-z, 0-9, '_', '-'"
            )
            continue
        try:
            key = _decode_key(encoded)
        except ValueError as error:
            problems.append(f"line {number}: {error}")
            continue
        if key_id in seen:
            problems.append(f"line {number}: key id {key_id!r} appears twice")
            continue
        seen.add(key_id)
        keys.append((key_id, key))
    return keys, problems


def _decode_key(encoded: str) -> bytes:
    # Standard or URL-safe alphabet, padding required, nothing else on the line.
    altchars = b"-_" if ("-" in encoded or "_" in encoded) else None
    try:
        key = base64.b64decode(encoded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key


def _map_bodies(record: Mapping[str, object], change: Callable[[str], str]) -> dict[str, object]:
    result = dict(record)
    for section_name in ("request", "response"):
        section = result.get(section_name)
        if not isinstance(section, Mapping):
            continue
        copied = dict(section)
        for owner, field in BODY_FIELDS:
            value = copied.get(field)
            if owner == section_name and isinstance(value, str):
                copied[field] = change(value)
        result[section_name] = copied
    return result
