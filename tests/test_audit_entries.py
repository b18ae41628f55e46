"""SPEC §17: a stream entry is read as its JSON document, or refused with a reason that names
the problem and never the content, so the CLI can skip it and go on."""

from __future__ import annotations

import json
import os

import pytest

from sidecar.audit.crypto import BodyCipher
from sidecar.audit.entries import MalformedEntry, decode_entry

CIPHER = BodyCipher([("k1", os.urandom(32))])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"other": b"{}"}, "no 'record' field"),
        ({b"record": b""}, "the 'record' field is not JSON"),
        ({b"record": b'{"a": 1'}, "the 'record' field is not JSON"),
        ({b"record": b"\xff"}, "the 'record' field is not JSON"),
        ({b"record": b"[" * 100_000 + b"]" * 100_000}, "the 'record' field is not JSON"),
        ({b"record": b'"text"'}, "the 'record' field is not a JSON object"),
        ({b"record": b"7"}, "the 'record' field is not a JSON object"),
    ],
)
def test_what_is_not_a_document(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(MalformedEntry) as raised:
        decode_entry(fields, "record")
    assert str(raised.value) == reason


def test_a_document_is_decrypted_and_a_bad_token_named_by_field() -> None:
    record = {"request_id": "r1", "path": "/v1/SECRET", "query": "", "ts": "t"}
    sealed = CIPHER.encrypt_record(record)
    raw = {b"record": json.dumps(sealed).encode()}
    assert decode_entry(raw, "record", CIPHER.decrypt_record) == record
    assert decode_entry(raw, "record") == sealed  # no key: as stored
    moved = CIPHER.encrypt_record({**record, "request_id": "r2"})
    forged = json.dumps({**sealed, "path": moved["path"]}).encode()
    with pytest.raises(MalformedEntry, match=r"^cannot decrypt: path: failed authentication"):
        decode_entry({b"record": forged}, "record", CIPHER.decrypt_record)


def test_escaped_surrogates_are_a_document() -> None:
    assert decode_entry({b"event": b'{"path": "/\\ud800"}'}, "event") == {"path": "/\ud800"}
