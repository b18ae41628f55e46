"""SPEC §7 encryption at rest: AES-256-GCM bodies, the key file, rotation, tampering."""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit.crypto import BodyCipher, generate_key_line
from sidecar.audit.record import capture
from sidecar.errors import ConfigError
from tests.audit_exchanges import a_record as recorded

PROPERTY = settings(database=None, deadline=None)


def key_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "audit.keys"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def raw_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def cipher(tmp_path: Path) -> BodyCipher:
    return BodyCipher.from_file(key_file(tmp_path, generate_key_line("k2026")))


def a_record() -> dict[str, object]:
    return recorded(
        ts="2026-11-29T10:00:00.123456Z",
        request_id="req-1",
        method="POST",
        path="/v1/orders",
        query="",
        client_ip="203.0.113.9",
        key_name="billing-live",
        key_id="k1d",
        scopes=["orders:write"],
        request_headers={"content-type": "application/json"},
        raw_body=capture(b'{"qty":1,"note":"raw"}', 1000),
        mapped_body=capture(b'{"qty":1}', 1000),
        response_status=201,
        response_headers={},
        response_body=capture(b'{"id":7}', 1000),
        duration_ms=3.1,
        upstream_ms=2.7,
        card_numbers="redact",
        credentials="redact",
    )


def sections(record: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    request, response = record["request"], record["response"]
    assert isinstance(request, dict)
    assert isinstance(response, dict)
    return request, response


# -- tokens -----------------------------------------------------------------------------------


def test_a_token_has_the_spec_shape_and_a_fresh_nonce(cipher: BodyCipher) -> None:
    first, second = cipher.encrypt("hello"), cipher.encrypt("hello")
    assert first.startswith("enc:v1:k2026:")
    assert first != second  # a random nonce each time
    blob = base64.b64decode(first.rsplit(":", 1)[1], validate=True)
    assert len(blob) == 12 + len(b"hello") + 16
    assert b"hello" not in blob
    assert cipher.decrypt(first) == cipher.decrypt(second) == "hello"


@PROPERTY
@given(st.text())
def test_encrypt_decrypt_round_trip(text: str) -> None:
    cipher = BodyCipher([("k", os.urandom(32))])
    token = cipher.encrypt(text)
    assert token.startswith("enc:v1:k:")
    assert cipher.decrypt(token) == text


def flip(token: str, position: int) -> str:
    prefix, encoded = token.rsplit(":", 1)
    blob = bytearray(base64.b64decode(encoded))
    blob[position] ^= 0x01
    return f"{prefix}:{base64.b64encode(bytes(blob)).decode()}"


@pytest.mark.parametrize("position", [0, 11, 12, 13, -1, -16])
def test_a_tampered_token_fails(cipher: BodyCipher, position: int) -> None:
    token = cipher.encrypt("the body")
    with pytest.raises(ValueError, match="failed authentication"):
        cipher.decrypt(flip(token, position))


def test_a_relabelled_token_fails(tmp_path: Path) -> None:
    # Two keys: a token moved to the other key id is refused, even with the other key's bytes.
    shared = raw_key()
    cipher = BodyCipher.from_file(key_file(tmp_path, f"a:{shared}", f"b:{shared}"))
    token = cipher.encrypt("the body")
    with pytest.raises(ValueError, match="failed authentication"):
        cipher.decrypt(token.replace("enc:v1:a:", "enc:v1:b:"))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("plain text", "not an encrypted audit body"),
        ("enc:v1:k2026:not base64!", "not an encrypted audit body"),
        ("enc:v1:k2026:AAAA", "too short"),
        ("enc:v1:k2026:AAA", "malformed base64"),
        ("enc:v1:other:" + "A" * 40, "key 'other', which the key file lacks"),
        ("enc:v2:k2026:" + "A" * 40, "not an encrypted audit body"),
    ],
)
def test_malformed_tokens_fail_clearly(cipher: BodyCipher, token: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cipher.decrypt(token)


def test_a_truncated_token_fails(cipher: BodyCipher) -> None:
    token = cipher.encrypt("a body long enough to cut")
    with pytest.raises(ValueError, match=r"failed authentication|malformed base64"):
        cipher.decrypt(token[:-4])


# -- records ------------------------------------------------------------------------------------


def test_encrypt_record_seals_the_three_bodies_only(cipher: BodyCipher) -> None:
    original = a_record()
    kept = copy.deepcopy(original)
    sealed = cipher.encrypt_record(original)
    assert original == kept  # a copy: the caller's record is untouched
    request, response = sections(sealed)
    for value in (request["raw_body"], request["mapped_body"], response["body"]):
        assert isinstance(value, str)
        assert value.startswith("enc:v1:k2026:")
    original_request, original_response = sections(original)
    assert {k: v for k, v in request.items() if not k.endswith("body")} == {
        k: v for k, v in original_request.items() if not k.endswith("body")
    }
    assert response["status"] == original_response["status"]
    assert {k: v for k, v in sealed.items() if k not in ("request", "response")} == {
        k: v for k, v in original.items() if k not in ("request", "response")
    }
    assert cipher.decrypt_record(sealed) == original


def test_empty_bodies_are_sealed_too(cipher: BodyCipher) -> None:
    record = a_record()
    request, _ = sections(record)
    request["raw_body"] = ""
    request_sealed, _ = sections(cipher.encrypt_record(record))
    assert str(request_sealed["raw_body"]).startswith("enc:v1:")
    assert cipher.decrypt_record(cipher.encrypt_record(record)) == record


def test_decrypt_record_passes_plain_records_through(cipher: BodyCipher) -> None:
    record = a_record()
    assert cipher.decrypt_record(record) == record


def test_decrypt_record_refuses_a_tampered_body(cipher: BodyCipher) -> None:
    sealed = cipher.encrypt_record(a_record())
    _, response = sections(sealed)
    response["body"] = flip(str(response["body"]), 20)
    with pytest.raises(ValueError, match="failed authentication"):
        cipher.decrypt_record(sealed)


def test_records_without_body_sections_pass(cipher: BodyCipher) -> None:
    odd: dict[str, object] = {"v": 1, "request": "not a mapping"}
    assert cipher.encrypt_record(odd) == odd


def test_key_rotation_old_records_decrypt_after_a_new_key_is_prepended(tmp_path: Path) -> None:
    old_line = generate_key_line("k2025")
    old = BodyCipher.from_file(key_file(tmp_path, old_line))
    sealed_before = old.encrypt_record(a_record())

    rotated = BodyCipher.from_file(key_file(tmp_path, generate_key_line("k2026"), old_line))
    assert rotated.key_id == "k2026"
    sealed_after = rotated.encrypt_record(a_record())
    _, response = sections(sealed_after)
    assert str(response["body"]).startswith("enc:v1:k2026:")

    assert rotated.decrypt_record(sealed_before) == a_record()
    assert rotated.decrypt_record(sealed_after) == a_record()
    with pytest.raises(ValueError, match="k2026"):
        old.decrypt_record(sealed_after)  # the old file alone cannot read new records


# -- the key file -------------------------------------------------------------------------------


def test_key_file_comments_blank_lines_and_url_safe_base64(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = key_file(
        tmp_path,
        "# audit keys, newest first",
        "",
        f"  k-1 : {base64.urlsafe_b64encode(key).decode()}  ",
        f"k_0:{raw_key()}",
    )
    cipher = BodyCipher.from_file(path)
    assert cipher.key_id == "k-1"
    assert BodyCipher([("k-1", key)]).decrypt(cipher.encrypt("x")) == "x"


def test_generate_key_line() -> None:
    line = generate_key_line("k2026")
    key_id, encoded = line.split(":")
    assert key_id == "k2026"
    assert len(base64.b64decode(encoded, validate=True)) == 32
    assert generate_key_line("k2026") != line
    with pytest.raises(ValueError, match="key id"):
        generate_key_line("bad id")


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        BodyCipher.from_file(path)
    for problem in raised.value.problems:
        assert problem.startswith("audit.encryption_key_file: ")
    return raised.value.problems


def test_a_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.keys"
    assert problems(path) == [
        f"audit.encryption_key_file: cannot read {path} (No such file or directory)"
    ]


def test_an_empty_key_file(tmp_path: Path) -> None:
    path = key_file(tmp_path, "# nothing yet", "")
    assert problems(path) == [
        f"audit.encryption_key_file: {path}: holds no key (expected lines of "
        "KEY_ID:BASE64_OF_32_BYTES)"
    ]


def test_every_bad_line_is_named_and_no_key_material_is_echoed(tmp_path: Path) -> None:
    short = base64.b64encode(b"s" * 16).decode()
    bare = raw_key()
    path = key_file(
        tmp_path,
        f"good:{raw_key()}",
        bare,  # no key id
        f"bad id:{raw_key()}",
        f"short:{short}",
        "notb64:@@@@",
        f"good:{raw_key()}",
    )
    found = problems(path)
    assert found == [
        f"audit.encryption_key_file: {path}: line 2: expected KEY_ID:BASE64_OF_32_BYTES",
        f"audit.encryption_key_file: {path}: line 3: the key id must be 1-32 characters of "
        "A-Z, a-z, 0-9, '_', '-'",
        f"audit.encryption_key_file: {path}: line 4: the key is 16 bytes; AES-256 needs 32",
        f"audit.encryption_key_file: {path}: line 5: the key is not valid base64",
        f"audit.encryption_key_file: {path}: line 6: key id 'good' appears twice",
    ]
    text = "\n".join(found)
    assert bare not in text
    assert short not in text
    assert "@@@@" not in text


def test_a_key_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.keys"
    path.write_bytes(b"\xff\xfe\x00")
    assert problems(path) == [f"audit.encryption_key_file: cannot read {path} (not UTF-8 text)"]


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
