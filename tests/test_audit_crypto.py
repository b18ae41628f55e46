"""SPEC §7 and §17 encryption at rest: every content field of a record (and an event's path)
AES-256-GCM sealed and bound to its record and field; v1 bodies still read; rotation; tampering."""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit.content import EVENT_FIELDS, RECORD_FIELDS, ContentFinding, content_findings
from sidecar.audit.crypto import BodyCipher, generate_key_line
from sidecar.audit.record import capture, dumps_record
from tests.audit_exchanges import a_record as recorded
from tests.audit_exchanges import an_event

PROPERTY = settings(database=None, deadline=None)
PATIENT = "Jane Doe"
# Plaintexts that must not appear anywhere in a sealed record: one per content field.
SECRETS = {
    "path": "/v1/patients/PATH-SECRET-77",
    "query": "q=QUERY-SECRET-88",
    "request.headers": PATIENT,
    "request.raw_body": "RAW-SECRET-1",
    "request.mapped_body": "MAPPED-SECRET-2",
    "response.headers": "RESPONSE-HEADER-SECRET-3",
    "response.body": "RESPONSE-SECRET-4",
}
CONTENT_PATHS = [field.path for field in RECORD_FIELDS]


def key_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "audit.keys"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cipher(tmp_path: Path) -> BodyCipher:
    return BodyCipher.from_file(key_file(tmp_path, generate_key_line("k2026")))


def a_record(request_id: str = "req-1") -> dict[str, Any]:
    return recorded(
        ts="2026-11-29T10:00:00.123456Z",
        request_id=request_id,
        method="POST",
        path=SECRETS["path"],
        query=SECRETS["query"],
        client_ip="203.0.113.9",
        key_name="billing-live",
        key_id="k1d",
        scopes=["orders:write"],
        request_headers={"content-type": "application/json", "x-patient-name": PATIENT},
        raw_body=capture(b'{"note":"RAW-SECRET-1"}', 1000),
        mapped_body=capture(b'{"note":"MAPPED-SECRET-2"}', 1000),
        response_status=201,
        response_headers={"x-trace": SECRETS["response.headers"]},
        response_body=capture(b'{"id":"RESPONSE-SECRET-4"}', 1000),
        duration_ms=3.1,
        upstream_ms=2.7,
        card_numbers="redact",
        credentials="redact",
    )


def field_value(document: dict[str, Any], path: str) -> Any:
    section, _, name = path.rpartition(".")
    return (document[section] if section else document)[name]


def set_field(document: dict[str, Any], path: str, value: Any) -> None:
    section, _, name = path.rpartition(".")
    (document[section] if section else document)[name] = value


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def v1_token(key_id: str, key: bytes, text: str) -> str:
    """A body as the previous release sealed it: associated data = the key id only."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, text.encode(), b"sidecar-audit-v1:" + key_id.encode())
    return f"enc:v1:{key_id}:{base64.b64encode(nonce + sealed).decode()}"


# -- tokens -----------------------------------------------------------------------------------


def test_a_token_has_the_v2_shape_and_a_fresh_nonce(cipher: BodyCipher) -> None:
    first = cipher.encrypt("hello", request_id="r", field="path")
    second = cipher.encrypt("hello", request_id="r", field="path")
    assert first.startswith("enc:v2:k2026:")
    assert first != second  # a random nonce each time
    blob = base64.b64decode(first.rsplit(":", 1)[1], validate=True)
    assert len(blob) == 12 + len(b"hello") + 16
    assert b"hello" not in blob
    assert cipher.decrypt(first, request_id="r", field="path") == "hello"


def test_the_associated_data_is_the_documented_one() -> None:
    """Anyone holding the key can read a token with nothing but the documented layout."""
    key = os.urandom(32)
    token = BodyCipher([("k1", key)]).encrypt("x", request_id="rid-9", field="request.headers")
    blob = base64.b64decode(token.rsplit(":", 1)[1])
    aad = b"sidecar-audit-v2\0k1\0rid-9\0request.headers"
    assert AESGCM(key).decrypt(blob[:12], blob[12:], aad) == b"x"


@PROPERTY
@given(st.text(), st.text(min_size=1))
def test_encrypt_decrypt_round_trip(text: str, request_id: str) -> None:
    cipher = BodyCipher([("k", os.urandom(32))])
    token = cipher.encrypt(text, request_id=request_id, field="query")
    assert cipher.decrypt(token, request_id=request_id, field="query") == text


def flip(token: str, position: int) -> str:
    prefix, encoded = token.rsplit(":", 1)
    blob = bytearray(base64.b64decode(encoded))
    blob[position] ^= 0x01
    return f"{prefix}:{base64.b64encode(bytes(blob)).decode()}"


@pytest.mark.parametrize("position", [0, 11, 12, 13, -1, -16])
def test_a_tampered_token_fails(cipher: BodyCipher, position: int) -> None:
    token = cipher.encrypt("the body", request_id="r", field="response.body")
    with pytest.raises(ValueError, match=r"^response.body: failed authentication"):
        cipher.decrypt(flip(token, position), request_id="r", field="response.body")


def test_a_relabelled_token_fails(tmp_path: Path) -> None:
    # Two keys: a token moved to the other key id is refused, even with the other key's bytes.
    shared = base64.b64encode(os.urandom(32)).decode()
    cipher = BodyCipher.from_file(key_file(tmp_path, f"a:{shared}", f"b:{shared}"))
    token = cipher.encrypt("the body", request_id="r", field="path")
    with pytest.raises(ValueError, match="failed authentication"):
        cipher.decrypt(token.replace("enc:v2:a:", "enc:v2:b:"), request_id="r", field="path")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("plain text", "not an encrypted audit field"),
        ("enc:v2:k2026:not base64!", "not an encrypted audit field"),
        ("enc:v2:k2026:AAAA", "too short"),
        ("enc:v2:k2026:AAA", "malformed base64"),
        ("enc:v2:other:" + "A" * 40, "key 'other', which the key file lacks"),
        ("enc:v3:k2026:" + "A" * 40, "not an encrypted audit field"),
    ],
)
def test_malformed_tokens_fail_clearly(cipher: BodyCipher, token: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^query: .*{message}"):
        cipher.decrypt(token, request_id="r", field="query")


def test_a_truncated_token_fails(cipher: BodyCipher) -> None:
    token = cipher.encrypt("a body long enough to cut", request_id="r", field="path")
    with pytest.raises(ValueError, match=r"failed authentication|malformed base64"):
        cipher.decrypt(token[:-4], request_id="r", field="path")


# -- records: what is sealed ------------------------------------------------------------------


def test_every_content_field_is_sealed_and_the_metadata_is_not(cipher: BodyCipher) -> None:
    original = a_record()
    kept = copy.deepcopy(original)
    sealed: dict[str, Any] = cipher.encrypt_record(original)
    assert original == kept  # a copy: the caller's record is untouched
    for path in CONTENT_PATHS:
        assert str(field_value(sealed, path)).startswith("enc:v2:k2026:"), path
    # No plaintext of any content field anywhere in the stored document, header names included.
    stored = dumps_record(sealed).decode()
    for secret in [*SECRETS.values(), "x-patient-name", "x-trace", "application/json"]:
        assert secret not in stored, secret
    for text in strings(sealed):
        assert PATIENT not in text
    # Everything else is as it was.
    unsealed = copy.deepcopy(sealed)
    for path in CONTENT_PATHS:
        set_field(unsealed, path, field_value(original, path))
    assert unsealed == original
    assert content_findings(sealed) == []
    assert cipher.decrypt_record(sealed) == original


def test_the_plaintext_metadata(cipher: BodyCipher) -> None:
    sealed: dict[str, Any] = cipher.encrypt_record(a_record())
    readable = {key for key, value in sealed.items() if not str(value).startswith("enc:")}
    assert readable >= {"v", "ts", "request_id", "method", "client_ip", "key_name", "key_id"}
    assert sealed["request"]["body_bytes"] == a_record()["request"]["body_bytes"]
    assert sealed["response"]["status"] == 201
    assert sealed["request"]["body_encoding"] == "utf-8"


def test_empty_and_null_values(cipher: BodyCipher) -> None:
    record = a_record()
    record["query"] = ""
    record["request"]["raw_body"] = ""
    record["request"]["headers"] = {}
    record["upstream_ms"] = None
    sealed: dict[str, Any] = cipher.encrypt_record(record)
    for path in ("query", "request.raw_body", "request.headers"):
        assert str(field_value(sealed, path)).startswith("enc:v2:")  # even "nothing" is sealed
    assert cipher.decrypt_record(sealed) == record


def test_odd_values_round_trip(cipher: BodyCipher) -> None:
    record = a_record()
    record["request"]["headers"] = {"x-odd": "lone \ud800 surrogate", "x-é": "ünïcode"}
    record["path"] = "/v1/\ud83d"
    assert cipher.decrypt_record(cipher.encrypt_record(record)) == record


def test_records_without_sections_or_request_id(cipher: BodyCipher) -> None:
    odd: dict[str, object] = {"v": 1, "request_id": "r", "request": "not a mapping"}
    assert cipher.encrypt_record(odd) == odd
    with pytest.raises(ValueError, match="request_id"):
        cipher.encrypt_record({"v": 1, "path": "/x"})


# -- records: moved ciphertexts fail ----------------------------------------------------------


@pytest.mark.parametrize("path", CONTENT_PATHS)
def test_a_field_moved_to_another_record_fails(cipher: BodyCipher, path: str) -> None:
    first = cipher.encrypt_record(a_record("req-1"))
    second = cipher.encrypt_record(a_record("req-2"))
    set_field(second, path, field_value(first, path))
    with pytest.raises(ValueError, match="failed authentication") as raised:
        cipher.decrypt_record(second)
    message = str(raised.value)
    assert message.startswith(f"{path}: failed authentication"), message
    for secret in SECRETS.values():
        assert secret not in message


def test_a_record_whose_request_id_is_changed_fails(cipher: BodyCipher) -> None:
    sealed: dict[str, Any] = cipher.encrypt_record(a_record("req-1"))
    sealed["request_id"] = "req-2"
    with pytest.raises(ValueError, match=r"^path: failed authentication"):
        cipher.decrypt_record(sealed)
    del sealed["request_id"]
    with pytest.raises(ValueError, match=r"^path: encrypted, but the document has no request_id"):
        cipher.decrypt_record(sealed)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("path", "query"),
        ("request.raw_body", "request.mapped_body"),
        ("request.raw_body", "response.body"),
        ("request.headers", "response.headers"),
        ("response.body", "path"),
    ],
)
def test_a_field_moved_within_its_record_fails(
    cipher: BodyCipher, source: str, target: str
) -> None:
    sealed: dict[str, Any] = cipher.encrypt_record(a_record())
    set_field(sealed, target, field_value(sealed, source))
    with pytest.raises(ValueError, match=f"^{target}: failed authentication"):
        cipher.decrypt_record(sealed)


def test_a_tampered_field_fails(cipher: BodyCipher) -> None:
    sealed: dict[str, Any] = cipher.encrypt_record(a_record())
    sealed["response"]["body"] = flip(sealed["response"]["body"], 20)
    with pytest.raises(ValueError, match=r"^response.body: failed authentication"):
        cipher.decrypt_record(sealed)


# -- events -----------------------------------------------------------------------------------


def an_auth_event(request_id: str, path: str = "/v1/patients/EVENT-SECRET") -> dict[str, Any]:
    return an_event(
        "invalid_secret",
        request_id=request_id,
        method="GET",
        path=path,
        client_ip="198.51.100.7",
        detail="unknown or invalid API key",
        key_id="kid",
    )


def test_an_events_path_is_sealed_and_bound(cipher: BodyCipher) -> None:
    event = an_auth_event("ev-1")
    sealed: dict[str, Any] = cipher.encrypt_event(event)
    assert sealed["path"].startswith("enc:v2:k2026:")
    assert "EVENT-SECRET" not in dumps_record(sealed).decode()
    assert {k: v for k, v in sealed.items() if k != "path"} == {
        k: v for k, v in event.items() if k != "path"
    }
    assert content_findings(sealed, EVENT_FIELDS) == []
    assert cipher.decrypt_event(sealed) == event

    other = cipher.encrypt_event(an_auth_event("ev-2"))
    other["path"] = sealed["path"]
    with pytest.raises(ValueError, match=r"^path: failed authentication"):
        cipher.decrypt_event(other)
    cleartext = an_auth_event("ev-3")
    assert cipher.decrypt_event(cleartext) == cleartext


# -- v1 records, rotation, findings -----------------------------------------------------------


def test_v1_bodies_still_decrypt_and_are_reported_as_legacy() -> None:
    key = os.urandom(32)
    cipher = BodyCipher([("k2025", key)])
    original = a_record()
    old = copy.deepcopy(original)  # the previous release: bodies sealed, the rest cleartext
    for path in ("request.raw_body", "request.mapped_body", "response.body"):
        set_field(old, path, v1_token("k2025", key, field_value(original, path)))
    assert cipher.decrypt_record(old) == original
    assert [str(finding) for finding in content_findings(old)] == [
        "path: cleartext while encryption is on",
        "query: cleartext while encryption is on",
        "request.headers: cleartext while encryption is on",
        "request.raw_body: legacy enc:v1 token (not bound to its record or field)",
        "request.mapped_body: legacy enc:v1 token (not bound to its record or field)",
        "response.headers: cleartext while encryption is on",
        "response.body: legacy enc:v1 token (not bound to its record or field)",
    ]
    # v1 had bodies only: a v1-shaped path is not decrypted, it is cleartext.
    old["path"] = v1_token("k2025", key, "/x")
    assert cipher.decrypt_record(old)["path"] == old["path"]
    assert ContentFinding("path", "cleartext") in content_findings(old)


def test_a_cleartext_record_is_all_findings(cipher: BodyCipher) -> None:
    record = a_record()
    assert cipher.decrypt_record(record) == record  # written before encryption was on
    assert content_findings(record) == [ContentFinding(p, "cleartext") for p in CONTENT_PATHS]
    assert content_findings({"v": 1}) == []  # absent fields are not findings


def test_key_rotation_old_records_decrypt_after_a_new_key_is_prepended(tmp_path: Path) -> None:
    old_line = generate_key_line("k2025")
    old = BodyCipher.from_file(key_file(tmp_path, old_line))
    sealed_before = old.encrypt_record(a_record())

    rotated = BodyCipher.from_file(key_file(tmp_path, generate_key_line("k2026"), old_line))
    assert rotated.key_id == "k2026"
    sealed_after: dict[str, Any] = rotated.encrypt_record(a_record())
    assert str(sealed_after["response"]["body"]).startswith("enc:v2:k2026:")

    assert rotated.decrypt_record(sealed_before) == a_record()
    assert rotated.decrypt_record(sealed_after) == a_record()
    with pytest.raises(ValueError, match="k2026"):
        old.decrypt_record(sealed_after)  # the old file alone cannot read new records


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "at least one key"),
        ([("k", b"x" * 31)], "32 bytes"),
        ([("bad id", b"x" * 32)], "key id"),
        ([("k", b"x" * 32), ("k", b"y" * 32)], "twice"),
    ],
)
def test_the_constructor_checks_its_keys(keys: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BodyCipher(keys)
