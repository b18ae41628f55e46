"""Pure: encryption at rest of what an audit record or event says about a request's content
(SPEC §7, §17): AES-256-GCM, rotatable keys, each ciphertext bound to its record and its field.

A content field becomes `enc:v2:{key_id}:{base64(nonce + ciphertext + tag)}` with a random
96-bit nonce and, as associated data,

    b"sidecar-audit-v2\\0" + key_id + b"\\0" + request_id + b"\\0" + field_path

so a token cannot be relabelled to another key, nor moved to another record (request id) or to
another field of the same record (field path): either fails authentication. The key id and the
field path hold no NUL, so the associated data reads back one way only, whatever the request id.

Records written before v2 hold `enc:v1:{key_id}:…` bodies, whose associated data is
`b"sidecar-audit-v1:" + key_id` alone; they still decrypt, and
`content.content_findings` names them.
The key file format is `keylines`' (the first key encrypts, every key decrypts).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sidecar.audit.content import (
    EVENT_FIELDS,
    LEGACY_PREFIX,
    RECORD_FIELDS,
    SEALED_PREFIX,
    ContentField,
)
from sidecar.audit.keylines import KEY_BYTES, KEY_ID, KEY_ID_RULE, generate_key_line, read_key_file

__all__ = ["SEALED_PREFIX", "BodyCipher", "generate_key_line"]

NONCE_BYTES = 12
TAG_BYTES = 16
ENCRYPTION_KEY = "audit.encryption_key_file"
_AAD_V2 = b"sidecar-audit-v2\0"
_AAD_V1 = b"sidecar-audit-v1:"
_TOKEN = re.compile(r"^enc:(v[12]):([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/]*={0,2})\Z")


# What sealing a document's fields needs, precomputed: (section, name, structured, the tail
# of the associated data).
_Plan = tuple[tuple[str | None, str, bool, bytes], ...]


def _plan(fields: Sequence[ContentField]) -> _Plan:
    return tuple((f.section, f.name, f.structured, f.path.encode("ascii")) for f in fields)


_RECORD_PLAN, _EVENT_PLAN = _plan(RECORD_FIELDS), _plan(EVENT_FIELDS)


class BodyCipher:
    """Encrypts the content fields of records and events with the first key, decrypts with
    any of them."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not KEY_ID.match(key_id):
                raise ValueError(f"a key id is {KEY_ID_RULE}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"an AES-256 key is {KEY_BYTES} bytes")
            if key_id in self._keys:
                raise ValueError(f"key id {key_id!r} appears twice")
            self._keys[key_id] = AESGCM(key)
        self.key_id = keys[0][0]  # the one that encrypts
        self._current = self._keys[self.key_id]
        self._token_head = f"{SEALED_PREFIX}{self.key_id}:"
        self._aad_head = _AAD_V2 + self.key_id.encode("ascii") + b"\0"

    @classmethod
    def from_file(cls, path: Path) -> BodyCipher:
        """The keys in `path`; `ConfigError` naming every problem, never showing key material."""
        return cls(read_key_file(path, ENCRYPTION_KEY).keys)

    def encrypt(self, text: str, *, request_id: str, field: str) -> str:
        """`text` sealed with the current key for `field` of the record `request_id`."""
        head = self._aad_head + _utf8(request_id) + b"\0"
        return self._seal(_utf8(text), head + field.encode("ascii"), os.urandom(NONCE_BYTES))

    def decrypt(self, token: str, *, request_id: str, field: str) -> str:
        """The text sealed in `token` for `field` of record `request_id`; ValueError naming the
        field (never the content) if the token is malformed, its key unknown, or it was altered
        or sealed for another record or field. A v1 token is checked against its key id only."""
        return _text(self._open(token, request_id, field))

    def encrypt_record(self, record: Mapping[str, object]) -> dict[str, object]:
        """A copy of `record` with every content field (`RECORD_FIELDS`) sealed and bound to
        the record's `request_id`; the metadata is untouched. ValueError without a request id."""
        return self._seal_fields(record, _RECORD_PLAN)

    def decrypt_record(self, record: Mapping[str, object]) -> dict[str, object]:
        """The inverse of `encrypt_record` (headers become dicts again); fields that are not
        tokens pass unchanged (records written before encryption was turned on), and so do v1
        bodies' plaintexts. ValueError as `decrypt`."""
        return self._open_fields(record, RECORD_FIELDS)

    def encrypt_event(self, event: Mapping[str, object]) -> dict[str, object]:
        """A copy of an authentication event with its `path` sealed, bound to its request id."""
        return self._seal_fields(event, _EVENT_PLAN)

    def decrypt_event(self, event: Mapping[str, object]) -> dict[str, object]:
        """The inverse of `encrypt_event`; a cleartext path passes unchanged."""
        return self._open_fields(event, EVENT_FIELDS)

    def _seal(self, plain: bytes, aad: bytes, nonce: bytes) -> str:
        sealed = self._current.encrypt(nonce, plain, aad)
        return self._token_head + binascii.b2a_base64(nonce + sealed, newline=False).decode()

    def _seal_fields(self, document: Mapping[str, object], plan: _Plan) -> dict[str, object]:
        # Once per request on the hot path: locals and a precomputed plan, no per-field calls
        # beyond the AEAD and base64 (it costs about 1.5 µs a field).
        request_id = document.get("request_id")
        if not isinstance(request_id, str):
            raise ValueError("no request_id to bind the encrypted fields to")
        head = self._aad_head + _utf8(request_id) + b"\0"
        # One getrandom() for the whole document rather than one per field.
        nonces = os.urandom(NONCE_BYTES * len(plan))
        encrypt, token_head, b2a = self._current.encrypt, self._token_head, binascii.b2a_base64
        result = dict(document)
        sections: dict[str, dict[str, object] | None] = {}
        offset = 0
        for section, name, structured, tail in plan:
            container: dict[str, object] | None = result
            if section is not None:
                if section not in sections:
                    value = result.get(section)
                    copied = dict(value) if isinstance(value, Mapping) else None
                    if copied is not None:
                        result[section] = copied
                    sections[section] = copied
                container = sections[section]
                if container is None:
                    continue
            assert container is not None
            value = container.get(name)
            if structured and isinstance(value, dict):
                plain = _json(value)
            elif isinstance(value, str):
                plain = _utf8(value)
            else:
                continue  # absent or null: nothing to hide, nothing to bind
            nonce = nonces[offset : offset + NONCE_BYTES]
            offset += NONCE_BYTES
            sealed = b2a(nonce + encrypt(nonce, plain, head + tail), newline=False)
            container[name] = token_head + sealed.decode("ascii")
        return result

    def _open_fields(
        self, document: Mapping[str, object], fields: Sequence[ContentField]
    ) -> dict[str, object]:
        result = dict(document)
        containers = _copied_sections(result, fields)
        request_id = document.get("request_id")
        for field in fields:
            container = containers.get(field.section)
            value = None if container is None else container.get(field.name)
            if not isinstance(value, str) or container is None:
                continue
            sealed = value.startswith(SEALED_PREFIX)
            if not sealed and not (field.legacy and value.startswith(LEGACY_PREFIX)):
                continue  # cleartext: `content_findings` reports it
            if not isinstance(request_id, str):
                raise ValueError(f"{field.path}: encrypted, but the document has no request_id")
            plain = self._open(value, request_id, field.path)
            container[field.name] = _object(plain, field.path) if field.structured else _text(plain)
        return result

    def _open(self, token: str, request_id: str, field: str) -> bytes:
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError(f"{field}: not an encrypted audit field (enc:v2:KEY_ID:BASE64)")
        version, key_id, encoded = match.groups()
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise ValueError(f"{field}: encrypted with key {key_id!r}, which the key file lacks")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"{field}: encrypted field: malformed base64") from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise ValueError(f"{field}: encrypted field: too short")
        if version == "v1":
            aad = _AAD_V1 + key_id.encode("ascii")
        else:
            aad = b"%s%s\0%s\0%s" % (_AAD_V2, key_id.encode(), _utf8(request_id), field.encode())
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise ValueError(
                f"{field}: failed authentication (altered, or moved from another record or field)"
            ) from None


def _copied_sections(
    result: dict[str, object], fields: Sequence[ContentField]
) -> dict[str | None, dict[str, object]]:
    """The containers `fields` live in, each a copy put into `result`: the caller's document
    is never changed. A section that is not a mapping is left alone."""
    containers: dict[str | None, dict[str, object]] = {None: result}
    for field in fields:
        section = field.section
        if section is None or section in containers:
            continue
        value = result.get(section)
        if isinstance(value, Mapping):
            containers[section] = result[section] = dict(value)
    return containers


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a `\ud800` escape: kept as it was
        return text.encode("utf-8", "surrogatepass")


def _text(plain: bytes) -> str:
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        return plain.decode("utf-8", "surrogatepass")


def _json(value: dict[object, object]) -> bytes:
    try:
        return orjson.dumps(value)  # compact, in the dict's order
    except orjson.JSONEncodeError:  # a lone surrogate: escape everything
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def _object(plain: bytes, field: str) -> dict[str, object]:
    try:
        value = orjson.loads(plain)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(plain)  # what `_json` escaped, orjson refuses
        except ValueError:
            raise ValueError(f"{field}: decrypted, but not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{field}: decrypted, but not a JSON object")
    return value
