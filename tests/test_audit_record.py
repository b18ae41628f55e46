"""SPEC §7 audit record, schema v1: fields, body capture and encoding, what is never recorded."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit.record import (
    BodyCapture,
    CapturedBody,
    capture,
    dumps_record,
    encode_body,
    recordable_headers,
)
from sidecar.config import GuardMode
from tests.audit_exchanges import a_record as recorded

PROPERTY = settings(database=None, deadline=None)

# The record of SPEC §7, field for field and nested as written there.
SPEC_FIELDS = {
    "v",
    "ts",
    "request_id",
    "method",
    "path",
    "query",
    "client_ip",
    "key_name",
    "key_id",
    "scopes",
    "request",
    "response",
    "duration_ms",
    "upstream_ms",
}
SPEC_REQUEST_FIELDS = {
    "headers",
    "raw_body",
    "mapped_body",
    "body_encoding",
    "body_truncated",
    "body_bytes",
    "inspected",  # SPEC §14: whether the data guard read the whole body
}
SPEC_RESPONSE_FIELDS = {"status", "headers", "body", "body_truncated", "body_bytes"}


def body(data: bytes, limit: int = 65536) -> CapturedBody:
    return capture(data, limit)


def record(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "ts": "2026-11-29T10:00:00.123456Z",
        "request_id": "req-1",
        "method": "POST",
        "path": "/v1/orders",
        "query": "a=1",
        "client_ip": "203.0.113.9",
        "key_name": "billing-live",
        "key_id": "k1d",
        "scopes": ("orders:write",),
        "request_headers": {"content-type": "application/json"},
        "raw_body": body(b'{"qty":1}'),
        "mapped_body": None,
        "response_status": 201,
        "response_headers": {"content-type": "application/json"},
        "response_body": body(b'{"id":7}'),
        "duration_ms": 3.1,
        "upstream_ms": 2.7,
        "card_numbers": "redact",
        "credentials": "redact",
    }
    arguments.update(overrides)
    built = recorded(**arguments)
    # Whatever it holds, it is one JSON document that reads back as built.
    assert json.loads(dumps_record(built)) == built
    return built


# -- the schema -------------------------------------------------------------------------------


def test_the_record_has_exactly_the_fields_of_spec_section_7() -> None:
    built = record()
    assert set(built) == SPEC_FIELDS
    assert set(built["request"]) == SPEC_REQUEST_FIELDS
    assert set(built["response"]) == SPEC_RESPONSE_FIELDS
    assert built == {
        "v": 1,
        "ts": "2026-11-29T10:00:00.123456Z",
        "request_id": "req-1",
        "method": "POST",
        "path": "/v1/orders",
        "query": "a=1",
        "client_ip": "203.0.113.9",
        "key_name": "billing-live",
        "key_id": "k1d",
        "scopes": ["orders:write"],
        "request": {
            "headers": {"content-type": "application/json"},
            "raw_body": '{"qty":1}',
            "mapped_body": '{"qty":1}',
            "body_encoding": "utf-8",
            "body_truncated": False,
            "body_bytes": 9,
            "inspected": True,
        },
        "response": {
            "status": 201,
            "headers": {"content-type": "application/json"},
            "body": '{"id":7}',
            "body_truncated": False,
            "body_bytes": 8,
        },
        "duration_ms": 3.1,
        "upstream_ms": 2.7,
    }


def test_a_public_route_has_no_key_and_no_upstream_time() -> None:
    built = record(key_name=None, key_id=None, scopes=(), upstream_ms=None)
    assert built["key_name"] is None
    assert built["key_id"] is None
    assert built["scopes"] == []
    assert built["upstream_ms"] is None


@pytest.mark.parametrize(
    ("given_ms", "recorded"),
    [(3.14159265, 3.142), (0.0, 0.0), (float("nan"), None), (float("inf"), None)],
)
def test_durations_are_rounded_and_always_valid_json(given_ms: float, recorded: float) -> None:
    built = record(duration_ms=given_ms, upstream_ms=given_ms)
    assert built["duration_ms"] == recorded
    assert built["upstream_ms"] == recorded


def test_dumps_record_is_compact_utf8_json() -> None:
    built = record(raw_body=body("Zoë".encode()), request_headers={"content-type": "text/plain"})
    dumped = dumps_record(built)
    assert "Zoë".encode() in dumped
    assert b", " not in dumped
    assert b'": ' not in dumped
    assert dumps_record({"a": "\ud800"}) == b'{"a":"\\ud800"}'


# -- bodies -----------------------------------------------------------------------------------


def test_mapped_body_as_forwarded_and_raw_body_as_received() -> None:
    built = record(
        raw_body=body(b'{"customer":{"ssn":"x","mail":"a@example.com"}}'),
        mapped_body=body(b'{"customer":{"email":"a@example.com"}}'),
    )
    assert built["request"]["raw_body"] == '{"customer":{"ssn":"x","mail":"a@example.com"}}'
    assert built["request"]["mapped_body"] == '{"customer":{"email":"a@example.com"}}'


def test_the_guard_masking_applies_to_raw_body_too() -> None:
    raw = b'{"user": {"password": "hunter2"}, "pan": "4111 1111 1111 1111"}'
    forwarded = b'{"user":{"password":"[REDACTED]"},"pan":"**** **** **** 1111"}'
    built = record(raw_body=body(raw), mapped_body=body(forwarded))
    assert built["request"]["raw_body"] == forwarded.decode()
    assert built["request"]["mapped_body"] == forwarded.decode()
    assert "hunter2" not in json.dumps(built)
    assert "4111 1111" not in json.dumps(built)


@pytest.mark.parametrize("mode", ["redact", "reject"])
def test_reject_mode_masks_the_record_too(mode: GuardMode) -> None:
    built = record(
        raw_body=body(b'{"password":"hunter2","pan":"4111111111111111"}'),
        card_numbers=mode,
        credentials=mode,
    )
    assert built["request"]["raw_body"] == '{"password":"[REDACTED]","pan":"************1111"}'


def test_off_mode_records_as_received() -> None:
    raw = '{"password": "hunter2", "pan": "4111111111111111"}'
    built = record(raw_body=body(raw.encode()), card_numbers="off", credentials="off")
    assert built["request"]["raw_body"] == raw


def test_a_truncated_json_capture_is_masked_by_the_token_scan() -> None:
    raw = b'{"user": {"password": "hunter2", "name": "ada"}, "card": "4111-1111-1111-1111", "x'
    built = record(raw_body=CapturedBody(raw, 100_000))
    assert built["request"]["raw_body"] == (
        '{"user": {"password": "[REDACTED]", "name": "ada"}, "card": "****-****-****-1111", "x'
    )
    assert built["request"]["body_truncated"] is True
    assert built["request"]["body_bytes"] == 100_000


def test_a_truncated_secret_is_masked_to_the_end() -> None:
    built = record(raw_body=CapturedBody(b'{"api_key": "abcdef', 1000))
    assert built["request"]["raw_body"] == '{"api_key": "[REDACTED]"'


def test_form_bodies_in_the_record() -> None:
    built = record(
        request_headers={"content-type": "application/x-www-form-urlencoded"},
        raw_body=body(b"user=ada&password=hunter2&pan=4111111111111111"),
    )
    assert built["request"]["raw_body"] == "user=ada&password=%5BREDACTED%5D&pan=************1111"


def test_response_bodies_are_masked_in_the_record() -> None:
    built = record(
        response_body=body(b'{"access_token":"eyJhbGciOi","token_type":"bearer"}'),
    )
    assert built["response"]["body"] == '{"access_token":"[REDACTED]","token_type":"bearer"}'


def test_cards_in_the_path_and_query_are_masked_and_credential_parameters_too() -> None:
    built = record(
        path="/v1/cards/4111111111111111",
        query="pan=4111-1111-1111-1111&access_token=abc&page=2",
    )
    assert built["path"] == "/v1/cards/************1111"
    assert built["query"] == "pan=****-****-****-1111&access_token=%5BREDACTED%5D&page=2"


def test_binary_bodies_are_base64_for_both_request_bodies() -> None:
    raw = bytes(range(256))
    built = record(
        request_headers={"content-type": "application/octet-stream"},
        raw_body=body(raw),
        mapped_body=body(b"plain"),
        response_body=body(b"\x89PNG\r\n\x1a\n"),
    )
    assert built["request"]["body_encoding"] == "base64"
    assert base64.b64decode(built["request"]["raw_body"]) == raw
    # One encoding covers both, so raw and mapped stay comparable.
    assert base64.b64decode(built["request"]["mapped_body"]) == b"plain"
    assert base64.b64decode(built["response"]["body"]) == b"\x89PNG\r\n\x1a\n"


def test_an_uninspected_body_is_recorded_as_forwarded_and_says_so() -> None:
    # SPEC §14: the guard did not read it, so it went upstream as it came; mapped_body must
    # show exactly that, never a masked body the upstream did not get.
    raw = b'{"pan":"4111111111111111"}'
    built = record(raw_body=body(raw), request_inspected=False)
    assert built["request"]["inspected"] is False
    assert built["request"]["mapped_body"] == raw.decode()
    assert built["request"]["raw_body"] == '{"pan":"************1111"}'
    gzipped = b"\x1f\x8b\x08\x00 4111111111111111"
    built = record(raw_body=body(gzipped), request_inspected=False)
    assert base64.b64decode(built["request"]["mapped_body"]) == gzipped


def test_binary_bodies_are_masked_before_base64() -> None:
    raw = b"\xff\xfe card 4111111111111111 \x80"
    built = record(raw_body=body(raw), request_headers={})
    assert base64.b64decode(built["request"]["raw_body"]) == b"\xff\xfe card ************1111 \x80"


def test_an_empty_body() -> None:
    built = record(raw_body=body(b""), response_body=body(b""))
    assert built["request"]["raw_body"] == ""
    assert built["request"]["body_encoding"] == "utf-8"
    assert built["request"]["body_bytes"] == 0
    assert built["response"]["body"] == ""


def test_the_capture_limit_truncates_and_counts() -> None:
    built = record(raw_body=body(b"x" * 100, limit=10), request_headers={})
    assert built["request"]["raw_body"] == "x" * 10
    assert built["request"]["body_truncated"] is True
    assert built["request"]["body_bytes"] == 100


# -- encode_body ------------------------------------------------------------------------------

EURO = "€".encode()  # 3 bytes
EMOJI = "😀".encode()  # 4 bytes


@pytest.mark.parametrize(
    ("data", "truncated", "expected"),
    [
        (b"hello", False, ("hello", "utf-8")),
        ("Zoë €".encode(), False, ("Zoë €", "utf-8")),
        (b"", False, ("", "utf-8")),
        (b"ab" + EURO[:1], True, ("ab", "utf-8")),
        (b"ab" + EURO[:2], True, ("ab", "utf-8")),
        (b"ab" + EMOJI[:3], True, ("ab", "utf-8")),
        (EMOJI[:1], True, ("", "utf-8")),
        # Not cut by the capture: an incomplete sequence is not UTF-8.
        (b"ab" + EURO[:2], False, (base64.b64encode(b"ab" + EURO[:2]).decode(), "base64")),
        # Invalid before the end: binary even when truncated.
        (b"a\xffb", True, (base64.b64encode(b"a\xffb").decode(), "base64")),
        (
            b"ab" + EURO[:1] + b"c",
            True,
            (base64.b64encode(b"ab" + EURO[:1] + b"c").decode(), "base64"),
        ),
        (b"\xff", True, ("/w==", "base64")),
        (b"\xed\xa0\x80", False, ("7aCA", "base64")),  # an encoded surrogate is not UTF-8
    ],
)
def test_encode_body(data: bytes, truncated: bool, expected: tuple[str, str]) -> None:
    assert encode_body(data, truncated=truncated) == expected


def test_encode_body_assumes_a_capture_that_may_be_cut() -> None:
    assert encode_body(b"ab" + EURO[:2]) == ("ab", "utf-8")


def test_a_record_of_a_capture_cut_inside_a_character_stays_utf8() -> None:
    data = ("é" * 10).encode()  # 20 bytes
    built = record(raw_body=body(data, limit=5), request_headers={"content-type": "text/plain"})
    assert built["request"]["body_encoding"] == "utf-8"
    assert built["request"]["raw_body"] == "éé"


@PROPERTY
@given(st.text(max_size=50), st.integers(min_value=0, max_value=200))
def test_any_cut_of_utf8_text_is_recorded_as_text(text: str, limit: int) -> None:
    data = text.encode()
    cut = data[:limit]
    decoded, encoding = encode_body(cut, truncated=len(cut) < len(data))
    assert encoding == "utf-8"
    assert data.startswith(decoded.encode())
    assert len(cut) - len(decoded.encode()) <= 3


@PROPERTY
@given(st.binary(max_size=100))
def test_encode_body_loses_nothing_but_a_cut_character(data: bytes) -> None:
    text, encoding = encode_body(data, truncated=False)
    if encoding == "base64":
        assert base64.b64decode(text) == data
    else:
        assert text.encode() == data


# -- BodyCapture ------------------------------------------------------------------------------


def test_body_capture_keeps_the_first_bytes_and_counts_all() -> None:
    tee = BodyCapture(5)
    for chunk in (b"ab", b"", b"cdef", b"ghij"):
        tee.feed(chunk)
    assert tee.result() == CapturedBody(b"abcde", 10)
    assert tee.result().truncated


def test_body_capture_of_zero_bytes() -> None:
    tee = BodyCapture(0)
    tee.feed(b"abc")
    assert tee.result() == CapturedBody(b"", 3)
    assert tee.result().truncated
    assert not BodyCapture(0).result().truncated


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BodyCapture(-1)


@PROPERTY
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=0, max_value=300))
def test_body_capture_keeps_min_of_limit_and_total(chunks: list[bytes], limit: int) -> None:
    tee = BodyCapture(limit)
    for chunk in chunks:
        tee.feed(chunk)
    whole = b"".join(chunks)
    result = tee.result()
    assert result.total == len(whole)
    assert len(result.data) == min(limit, len(whole))
    assert result.data == whole[:limit]
    assert result.truncated == (len(whole) > limit)
    assert capture(whole, limit) == result


# -- headers ----------------------------------------------------------------------------------

CREDENTIAL_HEADER_NAMES = [
    "Authorization",
    "authorization",
    "Proxy-Authorization",
    "Cookie",
    "Set-Cookie",
    "X-Api-Key",
    "X-Auth-Token",
    "X-Amz-Security-Token",
]


@pytest.mark.parametrize("name", CREDENTIAL_HEADER_NAMES)
def test_credential_headers_are_never_recordable(name: str) -> None:
    headers = [("Content-Type", "application/json"), (name, "Bearer sekrit")]
    assert recordable_headers(headers, None) == {"content-type": "application/json"}


def test_the_configured_key_header_is_never_recordable() -> None:
    headers = [("X-Key", "abc"), ("Accept", "*/*")]
    assert recordable_headers(headers, "x-key") == {"accept": "*/*"}
    assert recordable_headers(headers, "X-KEY") == {"accept": "*/*"}


def test_repeated_headers_are_joined_and_names_lowered() -> None:
    headers = [("Accept", "a"), ("ACCEPT", "b"), ("X-Trace", "t"), ("accept", "c")]
    assert recordable_headers(headers, None) == {"accept": "a, b, c", "x-trace": "t"}


def test_build_record_filters_headers_again() -> None:
    built = record(
        request_headers={"Authorization": "Bearer x", "Cookie": "s=1", "Accept": "*/*"},
        response_headers={"Set-Cookie": "s=2", "Content-Type": "text/plain"},
    )
    assert built["request"]["headers"] == {"accept": "*/*"}
    assert built["response"]["headers"] == {"content-type": "text/plain"}


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*CREDENTIAL_HEADER_NAMES, "Accept", "X-Key", "Content-Type"]),
            st.text(max_size=10),
        ),
        max_size=12,
    )
)
def test_no_credential_header_in_any_record(headers: list[tuple[str, str]]) -> None:
    recorded = recordable_headers(headers, "x-key")
    assert set(recorded) <= {"accept", "content-type"}
