"""SPEC §7 data guard and route `map` rules: card numbers, credential fields, JSON Pointers.

Card numbers here are the networks' published test numbers, or built by `luhn_number`; the
oracle `luhn_windows` (both in tests/luhn.py) re-implements the rule independently of
`sidecar.guard.cards`.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import GuardMode, RouteMap
from sidecar.errors import ForbiddenData
from sidecar.guard.cards import card_spans, luhn_valid, mask_cards
from sidecar.guard.credentials import is_credential_name
from sidecar.guard.jsondoc import parse_pointer
from sidecar.guard.rules import (
    GuardResult,
    guard_body,
    is_inspectable,
    redact_bytes,
    redact_text,
)
from sidecar.guard.scan import MAX_DEPTH
from tests.luhn import luhn_number, luhn_runs, luhn_windows

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
TEXT = "text/plain"

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"  # 15 digits
DINERS = "30569309025904"  # 14 digits
VISA_13 = "4222222222222"

PROPERTY = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NINETEEN = luhn_number("6" * 18)  # the longest a card can be
SEVENTEEN = luhn_number("6011000990139424")


def guard(
    body: bytes,
    content_type: str | None = JSON,
    *,
    cards: GuardMode = "redact",
    credentials: GuardMode = "redact",
    route_map: RouteMap | None = None,
) -> GuardResult:
    return guard_body(
        body, content_type, card_numbers=cards, credentials=credentials, route_map=route_map
    )


# -- card numbers ---------------------------------------------------------------------------


def test_the_test_oracle_agrees_with_known_numbers() -> None:
    for number in (VISA, MASTERCARD, AMEX, DINERS, VISA_13):
        assert luhn_number(number[:-1]) == number
        assert luhn_valid(number)
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (VISA, "************1111"),
        ("4111 1111 1111 1111", "**** **** **** 1111"),
        ("4111-1111-1111-1111", "****-****-****-1111"),
        ("3782 822463 10005", "**** ****** *0005"),
        (MASTERCARD, "************4444"),
        (DINERS, "**********5904"),
        (VISA_13, "*********2222"),
        (NINETEEN, "*" * 15 + NINETEEN[-4:]),
        ("4111 1111-1111 1111", "**** ****-**** 1111"),  # mixed separators still group
        ("4222 2222 2222 2", "**** **** *222 2"),  # a short last group
        (
            " ".join(
                [SEVENTEEN[:4], SEVENTEEN[4:8], SEVENTEEN[8:12], SEVENTEEN[12:16], SEVENTEEN[16]]
            ),
            "**** **** **** *" + SEVENTEEN[13:16] + " " + SEVENTEEN[16],
        ),
        (f"card: {VISA}.", "card: ************1111."),
        (f"pan={VISA}&x", "pan=************1111&x"),
        (f"a{VISA}b", "a************1111b"),  # letters end a digit run
        (f"{VISA},{MASTERCARD}", "************1111,************4444"),
        (f"order 12 {VISA}", "order 12 ************1111"),  # glued by a separator: still found
    ],
)
def test_card_numbers_are_masked_keeping_separators_and_last_four(text: str, masked: str) -> None:
    assert mask_cards(text) == (masked, True)
    result = guard(text.encode(), TEXT)
    assert result.body == masked.encode()
    assert result.changed
    assert result.findings == ("card_number",)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn-invalid
        "4111 1111 1111 1112",
        luhn_number("4" * 11),  # 12 digits
        luhn_number("4" * 19),  # 20 digits
        "9" + VISA,  # a card inside a 17-digit run is no card
        VISA + "0000",  # nor at the start of a 20-digit run
        "+1 415-555-2671",
        "(415) 555-2671",
        "+44 20 7946 0958",
        "2024-01-15",
        "2024-01-15T10:30:00.123456Z",
        "192.168.100.200",
        "4111  1111  1111  1111",  # double spaces are not a grouping
        "4111 - 1111 - 1111 - 1111",
        "4111.1111.1111.1111",
        " ".join(luhn_number("1234567890123")),  # single digits are a list of numbers
        "1 800 555 0199 1 800 555 0100",
        "41 11 11 11 11 11 11 11",  # groups of two
        "",
    ],
)
def test_non_card_digits_are_untouched(text: str) -> None:
    assert mask_cards(text) == (text, False)
    body = text.encode()
    result = guard(body, TEXT)
    assert result.body is body
    assert not result.changed
    assert result.findings == ()


def test_digits_kept_by_a_mask_never_spell_a_new_card() -> None:
    # The last four digits of the first card followed by the next groups are Luhn-valid too.
    tail = luhn_number("1111" + "0000" * 3)
    text = "4111 1111 1111 1111 " + " ".join([tail[:4], tail[4:8], tail[8:12], tail[12:]])
    assert luhn_windows(text)
    masked, found = mask_cards(text)
    assert found
    assert luhn_windows(masked) == []


def test_card_spans_do_not_overlap_and_cover_whole_groups() -> None:
    text = f"{VISA} and {MASTERCARD}-{AMEX}"
    spans = card_spans(text)
    assert [text[start:end] for start, end in spans] == [VISA, MASTERCARD, AMEX]


# -- credential names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "Password",
        "PASSWORD",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "clientSecret",
        "Client-Secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apiKey",
        "API-KEY",
        "apikey",
        "authorization",
        "private_key",
        "credential",
        "credentials",
        "new_password",
        "confirmPassword",
        "webhook_secret",
        "session_token",
        "stripe_apikey",
        "user[password]",
        "user.password",
        "cvv",
        "cvc2",
    ],
)
def test_credential_names(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "user",
        "username",
        "email",
        "password_hint",
        "token_type",
        "secretary",
        "key",
        "keyboard",
        "next_page_token",
        "pageToken",
        "continuation_token",
        "authorization_code_url",
        "",
        "[]",
    ],
)
def test_names_that_are_not_credentials(name: str) -> None:
    assert not is_credential_name(name)


# -- JSON bodies ------------------------------------------------------------------------------


def test_json_nested_objects_and_arrays_are_walked() -> None:
    body = json.dumps(
        {
            "user": {"name": "ada", "Password": "hunter2", "tokens": [{"api_key": "k-123"}]},
            "payments": [{"pan": "4111 1111 1111 1111"}, {"note": f"card {MASTERCARD} ok"}],
            "amount": 12.50,
        }
    ).encode()
    result = guard(body)
    assert result.changed
    assert json.loads(result.body) == {
        "user": {"name": "ada", "Password": "[REDACTED]", "tokens": [{"api_key": "[REDACTED]"}]},
        "payments": [{"pan": "**** **** **** 1111"}, {"note": "card ************4444 ok"}],
        "amount": 12.5,
    }
    assert result.findings == (
        "credential:/user/Password",
        "credential:/user/tokens/0/api_key",
        "card_number",
    )
    assert b"hunter2" not in result.body
    assert b"k-123" not in result.body


@pytest.mark.parametrize(
    "value",
    [
        "hunter2",
        12345,
        1.5,
        True,
        ["a", "b"],
        {"nested": "object"},
    ],
)
def test_a_credential_field_is_redacted_whatever_its_type(value: object) -> None:
    result = guard(json.dumps({"client_secret": value}).encode())
    assert json.loads(result.body) == {"client_secret": "[REDACTED]"}
    assert result.findings == ("credential:/client_secret",)


@pytest.mark.parametrize("value", [None, "", [], {}, "[REDACTED]"])
def test_an_empty_credential_field_carries_no_secret(value: object) -> None:
    body = json.dumps({"password": value}).encode()
    result = guard(body, credentials="reject")
    assert result.body is body
    assert result.findings == ()


def test_a_json_number_that_is_a_card_becomes_a_masked_string() -> None:
    result = guard(b'{"pan":4111111111111111,"qty":3,"price":1.10}')
    assert result.body == b'{"pan":"************1111","qty":3,"price":1.10}'
    assert result.findings == ("card_number",)


def test_a_member_name_holding_a_card_is_masked_and_so_is_its_finding() -> None:
    result = guard(b'{"4111111111111111":{"password":"x"}}')
    assert result.body == b'{"************1111":{"password":"[REDACTED]"}}'
    assert result.findings == ("credential:/************1111/password", "card_number")


def test_cards_written_with_json_escapes_are_found() -> None:
    result = guard(b'{"pan":"\\u0034111111111111111"}')
    assert result.body == b'{"pan":"************1111"}'


def test_a_repeated_member_name_is_inspected_in_every_copy() -> None:
    body = b'{"pan":"4111111111111111","pan":"none"}'
    with pytest.raises(ForbiddenData):
        guard(body, cards="reject")
    # Redacted, the body forwarded is the one inspected: one member, not two for parsers to pick.
    assert guard(body).body == b'{"pan":"none"}'


def test_unchanged_json_is_the_same_bytes_object_not_reserialised() -> None:
    body = b'{ "a" : 1.0e3, "b": [1, 2, {"c": "\\u00e9"}] }'
    result = guard(body)
    assert result.body is body
    assert not result.changed
    assert result.findings == ()


def test_changed_json_is_compact_utf8_and_keeps_number_literals() -> None:
    body = '{ "name": "Zoë", "big": 1.0E+400, "n": -0, "password": "p" }'.encode()
    result = guard(body)
    assert result.body == '{"name":"Zoë","big":1.0E+400,"n":-0,"password":"[REDACTED]"}'.encode()


def test_a_lone_surrogate_escape_survives_reserialisation() -> None:
    result = guard(b'{"a":"\\ud800","password":"p"}')
    assert json.loads(result.body) == {"a": "\ud800", "password": "[REDACTED]"}


def test_a_top_level_array_and_scalar() -> None:
    assert guard(b'[{"token":"t"},"4111111111111111"]').body == (
        b'[{"token":"[REDACTED]"},"************1111"]'
    )
    assert guard(b"4111111111111111").body == b'"************1111"'


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/problem+json",
        "application/vnd.api+json",
        "application/merge-patch+json",
    ],
)
def test_json_media_types(content_type: str) -> None:
    assert is_inspectable(content_type)
    assert guard(b'{"password":"p"}', content_type).body == b'{"password":"[REDACTED]"}'


def test_invalid_json_is_scanned_as_text() -> None:
    body = b'{"password": "hunter2", "pan": "4111 1111 1111 1111", oops'
    result = guard(body)
    assert result.body == b'{"password": "[REDACTED]", "pan": "**** **** **** 1111", oops'
    assert result.findings == ("credential:password", "card_number")


def test_deeply_nested_json_falls_back_to_text_and_still_masks() -> None:
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    body = f'{{"password": "hunter2", "d": {deep}, "pan": "{VISA}"}}'.encode()
    result = guard(body)
    assert b"hunter2" not in result.body
    assert VISA.encode() not in result.body
    assert result.body.endswith(b'"pan": "************1111"}')  # scanned, not reserialised


def test_json_at_the_depth_limit_is_walked() -> None:
    document: object = {"password": "p"}
    for _ in range(MAX_DEPTH - 1):
        document = [document]
    result = guard(json.dumps(document).encode())
    (finding,) = result.findings
    assert finding.startswith("credential:…/0/0/")  # a long pointer keeps its informative end
    assert finding.endswith("/0/0/password")
    assert len(finding) == len("credential:") + 100
    assert b" " not in result.body  # walked and reserialised compactly


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_pathological_nesting_does_not_blow_up(depth: int) -> None:
    body = b"[" * depth + b'"4111111111111111"' + b"]" * depth
    result = guard(body)
    assert VISA.encode() not in result.body
    assert result.findings == ("card_number",)


def test_huge_integers_do_not_hit_the_int_conversion_limit() -> None:
    body = b'{"n":' + b"7" * 10_000 + b',"password":"p"}'
    result = guard(body)
    assert result.body == b'{"n":' + b"7" * 10_000 + b',"password":"[REDACTED]"}'


# -- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected_detail"),
    [
        (
            b'{"user":{"password":"hunter2"}}',
            JSON,
            "the request body contains a credential field (/user/password)",
        ),
        (
            b'{"password":"hunter2","token":"hunter3"}',
            JSON,
            "the request body contains credential fields (/password, /token)",
        ),
        (b"user=ada&password=hunter2", FORM, "the request body contains a credential field "),
    ],
)
def test_reject_credentials_names_the_field_never_the_value(
    body: bytes, content_type: str, expected_detail: str
) -> None:
    with pytest.raises(ForbiddenData) as raised:
        guard(body, content_type, credentials="reject")
    assert raised.value.detail.startswith(expected_detail)
    assert raised.value.status == 422
    assert raised.value.event == "forbidden_data"
    assert "hunter" not in str(raised.value)
    assert "hunter" not in raised.value.detail


def test_reject_lists_at_most_five_fields() -> None:
    body = json.dumps({f"t{index}_token": "x" for index in range(8)}).encode()
    with pytest.raises(ForbiddenData) as raised:
        guard(body, credentials="reject")
    assert raised.value.detail == (
        "the request body contains credential fields "
        "(/t0_token, /t1_token, /t2_token, /t3_token, /t4_token, …)"
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"pan":"4111111111111111"}', JSON),
        (b'{"pan":4111111111111111}', JSON),
        (b"pan=4111+1111+1111+1111", FORM),
        (b"pay with 4111-1111-1111-1111", TEXT),
        (b"not json 4111111111111111", JSON),
    ],
)
def test_reject_card_numbers_never_shows_the_number(body: bytes, content_type: str) -> None:
    with pytest.raises(ForbiddenData) as raised:
        guard(body, content_type, cards="reject")
    assert raised.value.detail == "the request body contains a payment card number"
    assert "1111" not in str(raised.value)


def test_reject_one_kind_redact_the_other() -> None:
    body = b'{"password":"hunter2","pan":"4111111111111111"}'
    with pytest.raises(ForbiddenData, match="card"):
        guard(body, cards="reject", credentials="redact")
    result = guard(b'{"password":"hunter2"}', cards="reject")
    assert result.body == b'{"password":"[REDACTED]"}'


def test_a_card_inside_a_redacted_credential_is_not_a_card_finding() -> None:
    result = guard(b'{"secret":"4111111111111111"}', cards="reject")
    assert result.body == b'{"secret":"[REDACTED]"}'
    assert result.findings == ("credential:/secret",)


@pytest.mark.parametrize(
    ("cards", "credentials", "expected"),
    [
        ("off", "redact", b'{"password":"[REDACTED]","pan":"4111111111111111"}'),
        ("redact", "off", b'{"password":"hunter2","pan":"************1111"}'),
        ("off", "off", b'{"password":"hunter2","pan":"4111111111111111"}'),
    ],
)
def test_off_ignores_that_kind(cards: GuardMode, credentials: GuardMode, expected: bytes) -> None:
    body = b'{"password":"hunter2","pan":"4111111111111111"}'
    result = guard(body, cards=cards, credentials=credentials)
    assert result.body == expected
    if cards == credentials == "off":
        assert result.body is body
        assert result.findings == ()


def test_off_never_rejects() -> None:
    body = b'{"password":"hunter2","pan":"4111111111111111"}'
    assert guard(body, cards="off", credentials="off").body is body


# -- route map --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "route_map", "expected"),
    [
        (  # SPEC §5's example
            {"customer": {"ssn": "123-45-6789", "mail": "a@example.com"}},
            RouteMap(drop=["/customer/ssn"], rename={"/customer/mail": "/customer/email"}),
            {"customer": {"email": "a@example.com"}},
        ),
        (  # missing pointers are ignored
            {"a": 1},
            RouteMap(drop=["/b", "/a/c", "/x/y/z"], rename={"/nope": "/a2", "/a/x": "/b"}),
            {"a": 1},
        ),
        (  # ~1 is '/', ~0 is '~'
            {"a/b": 1, "m~n": 2, "keep": 3},
            RouteMap(drop=["/a~1b"], rename={"/m~0n": "/mn"}),
            {"keep": 3, "mn": 2},
        ),
        (  # ~01 is the name '~1', not '/'
            {"~1": 1, "/": 2},
            RouteMap(drop=["/~01"]),
            {"/": 2},
        ),
        (  # the empty name
            {"": 1, "a": 2},
            RouteMap(drop=["/"]),
            {"a": 2},
        ),
        (  # array elements: by index, later ones shift down
            {"items": [{"id": 1, "x": 9}, {"id": 2, "x": 8}]},
            RouteMap(drop=["/items/0/x", "/items/1/x", "/items/5", "/items/-", "/items/01"]),
            {"items": [{"id": 1}, {"id": 2}]},
        ),
        (  # rename creates missing objects on the target's way
            {"mail": "a@example.com"},
            RouteMap(rename={"/mail": "/contact/email"}),
            {"contact": {"email": "a@example.com"}},
        ),
        (  # rename replaces an existing target
            {"old": 1, "new": 2},
            RouteMap(rename={"/old": "/new"}),
            {"new": 1},
        ),
        (  # rename into an array: insert at index, or '-' appends
            {"x": "first", "y": "last", "list": [1, 2]},
            RouteMap(rename={"/x": "/list/0", "/y": "/list/-"}),
            {"list": ["first", 1, 2, "last"]},
        ),
        (  # a target that cannot hold the value leaves the source where it was
            {"a": 1, "b": "text", "c": 3, "list": []},
            RouteMap(rename={"/a": "/b/inner", "/c": "/list/9"}),
            {"a": 1, "b": "text", "c": 3, "list": []},
        ),
        (  # a move into its own inside is refused
            {"a": {"b": 1}},
            RouteMap(rename={"/a": "/a/b/c"}),
            {"a": {"b": 1}},
        ),
        (  # drops apply before renames
            {"a": 1, "b": 2},
            RouteMap(drop=["/b"], rename={"/a": "/b"}),
            {"b": 1},
        ),
    ],
)
def test_route_map(document: object, route_map: RouteMap, expected: object) -> None:
    body = json.dumps(document).encode()
    result = guard(body, route_map=route_map)
    assert json.loads(result.body) == expected
    assert result.changed == (expected != document)
    if not result.changed:
        assert result.body is body


def test_a_failed_rename_restores_member_order() -> None:
    body = b'{"a":1,"b":"text","c":3}'
    result = guard(body, route_map=RouteMap(rename={"/b": "/a/x"}))
    assert result.body is body


def test_the_guard_runs_before_the_map() -> None:
    route_map = RouteMap(rename={"/user/password": "/user/pw", "/card": "/pan"})
    result = guard(
        b'{"user":{"password":"hunter2"},"card":"4111111111111111"}', route_map=route_map
    )
    assert result.body == b'{"user":{"pw":"[REDACTED]"},"pan":"************1111"}'
    assert result.findings == ("credential:/user/password", "card_number")


def test_the_map_applies_with_the_guard_off() -> None:
    body = b'{"a":1,"a":2,"ssn":"x"}'
    result = guard(body, cards="off", credentials="off", route_map=RouteMap(drop=["/ssn"]))
    assert result.body == b'{"a":2}'


def test_the_map_applies_to_json_only() -> None:
    route_map = RouteMap(drop=["/a"])
    for body, content_type in ((b"a=1", FORM), (b'{"a":1}', TEXT), (b"{not json", JSON)):
        assert guard(body, content_type, route_map=route_map).body is body


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("/a/b", ["a", "b"]),
        ("/", [""]),
        ("/a~1b/m~0n", ["a/b", "m~n"]),
        ("/~01", ["~1"]),
        ("a", None),
        ("/a~2", None),
        ("/a~", None),
        ("/~~1", None),
    ],
)
def test_parse_pointer(text: str, tokens: list[str] | None) -> None:
    assert parse_pointer(text) == tokens


# -- forms and text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected", "findings"),
    [
        (
            b"user=ada&password=hunter2",
            b"user=ada&password=%5BREDACTED%5D",
            ("credential:password",),
        ),
        (
            b"pan=4111+1111+1111+1111&x=1",
            b"pan=****+****+****+1111&x=1",
            ("card_number",),
        ),
        (
            b"pan=4111%201111%201111%201111",
            b"pan=****+****+****+1111",
            ("card_number",),
        ),
        (
            b"user%5Bpassword%5D=p%C3%A9&name=Zo%C3%AB&raw=\xff",
            b"user%5Bpassword%5D=%5BREDACTED%5D&name=Zo%C3%AB&raw=\xff",
            ("credential:user[password]",),
        ),
        (b"password=&flag&a=b", b"password=&flag&a=b", ()),
        (b"Api-Key=k&&", b"Api-Key=%5BREDACTED%5D&&", ("credential:Api-Key",)),
    ],
)
def test_forms(body: bytes, expected: bytes, findings: tuple[str, ...]) -> None:
    result = guard(body, FORM)
    assert result.body == expected
    assert result.findings == findings
    assert result.changed == (expected != body)
    if not result.changed:
        assert result.body is body


def test_text_gets_cards_and_credential_pairs_masked() -> None:
    body = b"password=hunter2 card 4111 1111 1111 1111 page_token: abc"
    result = guard(body, "text/csv")
    assert result.body == b"password=[REDACTED] card **** **** **** 1111 page_token: abc"
    assert result.findings == ("credential:password", "card_number")


def test_text_in_a_declared_charset() -> None:
    body = f"carte {VISA} é".encode("utf-16")
    result = guard(body, "text/plain; charset=UTF-16")
    assert result.body.decode("utf-16") == "carte ************1111 é"
    latin = f"carte {VISA} \xe9".encode("latin-1")
    assert guard(latin, "text/plain; charset=latin-1").body == b"carte ************1111 \xe9"


def test_non_utf8_text_is_masked_byte_exactly() -> None:
    body = b"\xff\xfe 4111111111111111 \x80"
    assert guard(body, TEXT).body == b"\xff\xfe ************1111 \x80"


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/octet-stream", "image/png", "multipart/form-data; boundary=x"],
)
def test_other_types_are_not_inspected(content_type: str | None) -> None:
    body = b'{"password":"hunter2","pan":"4111111111111111"}'
    assert not is_inspectable(content_type)
    result = guard(body, content_type, cards="reject", credentials="reject")
    assert result.body is body
    assert result.findings == ()


def test_an_empty_body() -> None:
    body = b""
    assert guard(body, JSON, cards="reject").body is body


# -- redact_text, for the audit record ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"user": {"password": "hunter2"}}', '{"user":{"password":"[REDACTED]"}}'),
        ('{"ok": true}', '{"ok": true}'),  # unchanged text keeps its layout
        (  # truncated JSON: the token scan, unterminated values run to the end
            '{"user": {"password": "hunter2", "pan": "4111 1111 1111 1111"}, "api_key": "k-12',
            '{"user": {"password": "[REDACTED]", "pan": "**** **** **** 1111"}, "api_key": '
            '"[REDACTED]"',
        ),
        (
            '{"credentials": {"user": "a", "pass": "b"}, "next": "4111111111111111"',
            '{"credentials": "[REDACTED]", "next": "************1111"',
        ),
        ('{"a": "say \\"password\\": no", "b": 1', '{"a": "say \\"password\\": no", "b": 1'),
        ('{"pass\\u0077ord": 12, "x', '{"pass\\u0077ord": "[REDACTED]", "x'),
        ('{"password": null, "token": "", "b', '{"password": null, "token": "", "b'),
        ("plain text 4111-1111-1111-1111", "plain text ****-****-****-1111"),
        ("4111111111111111", "************1111"),  # a bare number is not turned into a string
        ("", ""),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text, card_numbers="redact", credentials="redact") == expected
    assert redact_text(text, card_numbers="reject", credentials="reject") == expected


def test_redact_text_form_by_type_and_off_modes() -> None:
    form = "user=ada&password=hunter2&pan=4111111111111111"
    assert redact_text(form, card_numbers="redact", credentials="redact", content_type=FORM) == (
        "user=ada&password=%5BREDACTED%5D&pan=************1111"
    )
    assert redact_text(form, card_numbers="off", credentials="off", content_type=FORM) is form


def test_redact_bytes_keeps_other_bytes() -> None:
    data = b'\xff{"password": "\xfe\xfd", "pan": "4111111111111111"}\x80'
    assert redact_bytes(data, card_numbers="redact", credentials="redact") == (
        b'\xff{"password": "[REDACTED]", "pan": "************1111"}\x80'
    )


# -- properties -------------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from([JSON, FORM, TEXT, "text/html; charset=utf-16", None, "x/y+json"])
MODES = st.sampled_from(["redact", "off"])
ANY_MAP = RouteMap(drop=["/a", "/0", "/x/~1"], rename={"/b": "/c/d", "/e": "/0/-"})


def cards_text() -> st.SearchStrategy[str]:
    """Text salted with card numbers in every writing, and with digit noise."""
    card = st.sampled_from(
        [VISA, MASTERCARD, AMEX, DINERS, VISA_13, "4111 1111 1111 1111", "5555-5555-5555-4444"]
    )
    piece = st.one_of(card, st.text(alphabet="0123456789 -", max_size=30), st.text(max_size=10))
    return st.lists(piece, max_size=8).map("".join)


@PROPERTY
@given(st.binary(max_size=400), CONTENT_TYPES, MODES, MODES)
def test_guard_never_raises_in_redact_mode(
    body: bytes, content_type: str | None, cards: GuardMode, credentials: GuardMode
) -> None:
    result = guard(body, content_type, cards=cards, credentials=credentials, route_map=ANY_MAP)
    assert result.changed == (result.body is not body)


@PROPERTY
@given(st.one_of(st.binary(max_size=200), cards_text().map(str.encode)))
def test_masked_text_holds_no_card_number(body: bytes) -> None:
    result = guard(body, TEXT)
    assert luhn_windows(result.body.decode("latin-1")) == []
    assert luhn_runs(result.body.decode("latin-1")) == []
    # Only digits were replaced, one for one.
    assert len(result.body) == len(body)
    for before, after in zip(body, result.body, strict=True):
        assert after == before or (before in b"0123456789" and after == ord("*"))
    assert guard(result.body, TEXT).body is result.body


@PROPERTY
@given(cards_text())
def test_mask_cards_output_has_no_card_and_is_stable(text: str) -> None:
    masked, found = mask_cards(text)
    assert luhn_windows(masked) == []
    assert luhn_runs(masked) == []
    assert found == (masked != text)
    assert found == bool(luhn_windows(text))
    assert mask_cards(masked) == (masked, False)


json_names = st.one_of(
    st.sampled_from(["password", "apiKey", "user", "pan", "id_token", "next_page_token", VISA]),
    st.text(max_size=8),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.sampled_from([int(VISA), int(AMEX)]),
        st.floats(allow_nan=False),
        cards_text(),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_names, children, max_size=4)
    ),
    max_leaves=20,
)


def assert_clean(value: object) -> None:
    """No card anywhere, no credential-named member with a secret left in it."""
    if isinstance(value, str):
        assert luhn_windows(value) == []
    elif isinstance(value, int | float) and not isinstance(value, bool):
        assert luhn_windows(json.dumps(value)) == []
    elif isinstance(value, list):
        for item in value:
            assert_clean(item)
    elif isinstance(value, dict):
        for name, item in value.items():
            assert luhn_windows(name) == []
            if is_credential_name(name):
                assert item in (None, "", [], {}, "[REDACTED]")
            assert_clean(item)


def test_numbers_without_a_card_stay_numbers_when_the_body_is_rewritten() -> None:
    body = b'{"a": 3.5e+16, "b": 2.0, "c": "4111 1111 1111 1111"}'
    document = json.loads(guard(body).body)
    assert document["a"] == 3.5e16
    assert document["b"] == 2.0
    assert document["c"] == "**** **** **** 1111"


def test_a_card_written_in_a_numbers_fraction_is_masked() -> None:
    # 34811278260419710 to a parser, but "481127826041971" (Luhn-valid) to a reader of the text.
    result = guard(b'{"a": 3.481127826041971e+16}')
    assert luhn_windows(result.body.decode()) == []
    assert result.findings == ("card_number",)


@PROPERTY
@given(json_values)
def test_redacted_json_is_json_and_clean(document: object) -> None:
    body = json.dumps(document).encode()
    result = guard(body, route_map=ANY_MAP)
    assert_clean(json.loads(result.body))
    again = guard(result.body)
    assert again.body is result.body
    assert again.findings == ()


@PROPERTY
@given(st.lists(st.tuples(json_names, cards_text()), max_size=6))
def test_redacted_forms_are_clean(fields: list[tuple[str, str]]) -> None:
    body = urlencode(fields).encode()
    result = guard(body, FORM)
    for name, value in parse_qsl(result.body.decode(), keep_blank_values=True):
        assert luhn_windows(name) == []
        assert luhn_windows(value) == []
        if is_credential_name(name):
            assert value in ("", "[REDACTED]")
    assert guard(result.body, FORM).body is result.body


@PROPERTY
@given(st.binary(max_size=300) | cards_text().map(str.encode), MODES, MODES)
def test_reject_mode_raises_only_forbidden_data(
    body: bytes, cards: GuardMode, credentials: GuardMode
) -> None:
    for content_type in (JSON, FORM, TEXT):
        try:
            guard(
                body,
                content_type,
                cards="reject" if cards == "redact" else "off",
                credentials="reject" if credentials == "redact" else "off",
            )
        except ForbiddenData as raised:
            detail = raised.detail
        else:
            continue
        assert "1111" not in detail


# -- the fast path ----------------------------------------------------------------------------


_FAST_ALPHABET = '0123456789 -_abcdeiknoprstwyPASWORDTKEN{}[]":,.\\u%+='


@settings(max_examples=400, deadline=None, database=None)
@given(
    text=st.text(alphabet=_FAST_ALPHABET, max_size=120),
    kind=st.sampled_from(["json", "form", "text"]),
)
def test_the_fast_path_only_skips_bodies_the_full_scan_leaves_alone(text: str, kind: str) -> None:
    """Skipping the parse is an optimisation: whenever it skips, the full scan finds nothing."""
    from sidecar.guard.scan import Scan, worth_scanning
    from sidecar.guard.textscan import redact_any

    scan = Scan(cards=True, credentials=True)
    if worth_scanning(text, kind, scan):  # type: ignore[arg-type]
        return
    full = Scan(cards=True, credentials=True)
    assert redact_any(text, full, kind, parse_json=True) == text  # type: ignore[arg-type]
    assert full.findings == []
