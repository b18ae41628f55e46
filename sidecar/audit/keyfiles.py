"""Pure apart from reading files: the audit trail's keys as `serve` and `check-config` both load
them (SPEC §17), so `check-config` refuses exactly what `serve` refuses.

- `audit.encryption_key_file` → the `BodyCipher` that seals content fields (none when unset).
- `audit.integrity_key_file` → the HMAC keys that sign stream documents. When it is unset and an
  encryption key file is set, one integrity key per encryption key, with the same id, derived by
  HKDF-SHA256 (info `sidecar-audit-integrity-v1`): the MAC needs no second secret to deploy,
  and a derived key says nothing about the encryption key it came from. Neither set: no MAC.

A key file that the group or others may read is used, with a warning naming the key, the file
and its mode: refusing it would stop a running deployment on its next restart.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sidecar.audit.crypto import ENCRYPTION_KEY, BodyCipher
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.keylines import KEY_BYTES, KeyFile, read_key_file
from sidecar.config import Settings
from sidecar.errors import ConfigError

INTEGRITY_KEY = "audit.integrity_key_file"
DERIVATION_INFO = b"sidecar-audit-integrity-v1"


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """The keys of the audit trail: either may be None (not configured)."""

    cipher: BodyCipher | None
    integrity: IntegrityKeys | None
    warnings: list[str] = field(default_factory=list)


def load_audit_keys(settings: Settings) -> AuditKeys:
    """Read and check both key files; `ConfigError` with every problem of both (naming the
    config key, the file and the line, never key material)."""
    encryption_path = settings.audit.encryption_key_file
    integrity_path = settings.audit.integrity_key_file
    problems: list[str] = []
    warnings: list[str] = []
    encryption = _read(encryption_path, ENCRYPTION_KEY, problems, warnings)
    integrity_file = _read(integrity_path, INTEGRITY_KEY, problems, warnings)
    if problems:
        raise ConfigError(problems)
    cipher = None if encryption is None else BodyCipher(encryption.keys)
    integrity: IntegrityKeys | None = None
    if integrity_file is not None:
        integrity = IntegrityKeys.of(integrity_file.keys)
    elif encryption is not None:
        integrity = derive_integrity_keys(encryption.keys)
    return AuditKeys(cipher, integrity, warnings)


def derive_integrity_keys(encryption_keys: list[tuple[str, bytes]]) -> IntegrityKeys:
    """One integrity key per encryption key, same id and order (the first signs)."""
    derived = [(key_id, derive_integrity_key(key)) for key_id, key in encryption_keys]
    return IntegrityKeys.of(derived)


def derive_integrity_key(encryption_key: bytes) -> bytes:
    """HKDF-SHA256 of an encryption key, info `sidecar-audit-integrity-v1`, 32 bytes."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=DERIVATION_INFO)
    return hkdf.derive(encryption_key)


def derived_integrity_lines(encryption_key_file: Path) -> list[str]:
    """The integrity key file lines equal to the keys derived from `encryption_key_file`: what
    an operator moving to a separate `audit.integrity_key_file` keeps in it, so the records
    signed so far still verify. (Key material: for the new file, never for a log.)"""
    keys = read_key_file(encryption_key_file, ENCRYPTION_KEY).keys
    derived = derive_integrity_keys(keys)
    return [
        f"{key_id}:{base64.b64encode(key).decode('ascii')}" for key_id, key in derived.keys.items()
    ]


def _read(
    path: Path | None, config_key: str, problems: list[str], warnings: list[str]
) -> KeyFile | None:
    if path is None:
        return None
    try:
        key_file = read_key_file(path, config_key)
    except ConfigError as error:
        problems.extend(error.problems)
        return None
    if key_file.exposed:
        warnings.append(
            f"{config_key}: {path} is readable by group or others (mode {key_file.mode:04o});"
            " make it 0600 (chmod 600)"
        )
    return key_file
