"""Pure apart from reading the file: the audit key file format, shared by the encryption key file
(`audit.encryption_key_file`) and the integrity key file (`audit.integrity_key_file`).

One key per line, `KEY_ID:BASE64_OF_32_BYTES` (standard or URL-safe alphabet, padded); blank
lines and `#` comments are ignored. The first key is the one that encrypts or signs; every key
decrypts or verifies, so a key is rotated by putting a new line first and keeping the old one
for as long as what it sealed is kept. Problems name the config key, the file and the line,
never what is on the line: a typo must not print a key into a log.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError

KEY_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")  # \Z: `$` also matches before a newline
KEY_ID_RULE = "1-32 characters of A-Z, a-z, 0-9, '_' and '-'"
# A key file holds a few lines; anything this large is the wrong file, and is not read whole.
_MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class KeyFile:
    """The keys of one key file, in file order, and the file's permission bits."""

    keys: list[tuple[str, bytes]]
    mode: int

    @property
    def exposed(self) -> bool:
        """Whether the group or others may read or write the file (it should be 0600 or 0400)."""
        return bool(self.mode & 0o077)


def read_key_file(path: Path, config_key: str) -> KeyFile:
    """The keys in `path`; `ConfigError` naming `config_key`, the file and each bad line."""
    try:
        # stat first: reading a FIFO or a device named by mistake would block or never end.
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError([f"{config_key}: cannot read {path} (not a regular file)"])
        if status.st_size > _MAX_FILE_BYTES:
            raise ConfigError([f"{config_key}: {path}: larger than 1 MiB; not a key file"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError([f"{config_key}: cannot read {path} ({reason})"]) from None
    keys, problems = parse_key_lines(text)
    if not keys and not problems:
        problems.append("holds no key (expected lines of KEY_ID:BASE64_OF_32_BYTES)")
    if problems:
        raise ConfigError([f"{config_key}: {path}: {problem}" for problem in problems])
    return KeyFile(keys, stat.S_IMODE(status.st_mode))


def parse_key_lines(text: str) -> tuple[list[tuple[str, bytes]], list[str]]:
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
        if not KEY_ID.match(key_id):
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


def generate_key_line(key_id: str) -> str:
    """A fresh key file line, `key_id:base64(32 random bytes)`, for operators: the same line
    serves the encryption key file and the integrity key file."""
    if not KEY_ID.match(key_id):
        raise ValueError(f"a key id is {KEY_ID_RULE}")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"


def _decode_key(encoded: str) -> bytes:
    # Standard or URL-safe alphabet, padding required, nothing else on the line.
    altchars = b"-_" if ("-" in encoded or "_" in encoded) else None
    try:
        key = base64.b64decode(encoded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key is {len(key)} bytes, not {KEY_BYTES}")
    return key
