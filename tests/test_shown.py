"""SPEC §17: "Logs and events mask card numbers and key-shaped strings in paths and header values
exactly as the audit record does." One function, `sidecar.guard.shown`, makes that text; these
tests hold it to the record's masking, and hold the record, the event and the log line of one path
to one another."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit.events import build_event
from sidecar.audit.exchange import Captures, Exchange
from sidecar.audit.record import BodyCapture, build_record
from sidecar.errors import MissingKey
from sidecar.guard.cards import mask_cards
from sidecar.guard.keyshapes import MASKED_SECRET, mask_keys
from sidecar.guard.shown import (
    HEADER_SHOWN_CHARS,
    SHOWN_CHARS,
    bounded,
    masked,
    shown,
    shown_header,
)
from sidecar.keys.format import generate_key
from tests.audit_exchanges import Key
from tests.luhn import luhn_number, luhn_windows

PROPERTY = settings(database=None, deadline=None, max_examples=200)

CARD = luhn_number("411111111111111")  # 16 digits, Luhn-valid
KEY, _parsed = generate_key("sk", "live")
KEY_PUBLIC = KEY.rsplit("_", 1)[0] + "_"  # prefix, environment and id: what a mask keeps
SECRET = KEY.rsplit("_", 1)[1]
PATH = f"/v1/cards/{CARD}/keys/{KEY}"


def test_a_card_and_a_key_in_a_path_are_masked_as_the_guard_masks_them() -> None:
    text = shown(PATH)
    assert CARD not in text
    assert SECRET not in text
    assert text == f"/v1/cards/{'*' * 12}{CARD[-4:]}/keys/{KEY_PUBLIC}{MASKED_SECRET}"
    assert text == mask_cards(mask_keys(PATH))[0]  # the same functions, the same output


def test_a_card_written_in_groups_keeps_its_separators_and_last_four() -> None:
    grouped = f"{CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]}"
    assert shown(f"x-{grouped}") == f"x-****-****-****-{CARD[12:]}"


def test_a_key_whose_secret_holds_a_card_number_is_masked_whole() -> None:
    # Cards first would turn part of the secret into `*`s, and the rest would no longer have
    # a key's shape: the digits outside the card would stay in the clear.
    secret = "Ab" + CARD + "Cd" * 15 + "x"
    assert len(secret) == len(SECRET)
    key = f"{KEY_PUBLIC}{secret}"
    assert shown(f"/p/{key}") == f"/p/{KEY_PUBLIC}{MASKED_SECRET}"
    assert "Cd" not in shown(f"/p/{key}")


def test_text_with_nothing_to_mask_is_returned_as_it_is() -> None:
    text = "/v1/orders/12345/items?page=2"
    assert shown(text) is text
    assert masked(text) is text


def test_nothing_is_escaped_here_the_renderer_does_that() -> None:
    text = '/a\n"b"\x1b[31m\\'
    assert shown(text) == text


def test_shown_text_is_bounded_with_a_note_of_what_was_cut() -> None:
    long = "/" + "a" * 5000
    text = shown(long)
    assert text == "/" + "a" * (SHOWN_CHARS - 1) + f"…(+{len(long) - SHOWN_CHARS} chars)"
    assert shown(long) == bounded(long)
    assert (
        shown_header("b" * 200)
        == "b" * HEADER_SHOWN_CHARS + f"…(+{200 - HEADER_SHOWN_CHARS} chars)"
    )


def test_a_card_across_the_cut_is_masked_before_the_cut() -> None:
    # Bounded first, the cut would leave a 14-digit prefix: not a card, shown in the clear.
    text = "x" * (HEADER_SHOWN_CHARS - 14) + CARD
    assert CARD[:14] not in shown_header(text)
    assert shown_header(text).startswith("x" * (HEADER_SHOWN_CHARS - 14) + "*" * 12)


def test_cards_off_leaves_cards_and_still_masks_keys() -> None:
    text = shown(PATH, cards=False)
    assert CARD in text
    assert SECRET not in text


@PROPERTY
@given(
    st.lists(
        st.sampled_from(["/", "-", " ", "a", "_", CARD, CARD[:8], KEY, "4", "1", "é", "\n"]),
        max_size=12,
    ).map("".join)
)
def test_shown_text_holds_no_card_and_no_secret(text: str) -> None:
    out = shown(text, 10_000)
    assert luhn_windows(out) == []
    assert SECRET not in out
    assert out == mask_cards(mask_keys(text))[0]


# -- the record, the event and the log line of one path -------------------------------------------


def exchange_of(path: str, principal: Key | None) -> Exchange[Key]:
    """An exchange as the proxy makes it, with the shown path the lead's pipeline sets:
    `shown_path=shown(path, cards=guard.card_numbers != "off")`; the request log line
    (`Pipeline._finish`) prints `exchange.shown_path`, as `build_event` does."""
    return Exchange(
        request_id="req-1",
        method="GET",
        client_ip="192.0.2.1",
        path=path,
        shown_path=shown(path),
        started=0.0,
        route="(default)",
        principal=principal,
        captures=Captures(64, BodyCapture(64), BodyCapture(64)),
    )


def record_path(exchange: Exchange[Key], card_numbers: str = "redact") -> str:
    path = build_record(
        exchange,
        ts="2026-01-01T00:00:00.000000Z",
        response_headers=(),
        duration_ms=1.0,
        card_numbers=card_numbers,
        credentials="redact",
    )["path"]
    assert isinstance(path, str)
    return path


def test_record_path_equals_event_path_equals_log_path() -> None:
    for principal in (None, Key("k1", "orders", ("orders:read",))):
        exchange = exchange_of(PATH, principal)
        event = build_event(exchange, MissingKey())
        log_path = exchange.shown_path
        assert record_path(exchange) == event["path"] == log_path
        assert CARD not in log_path
        assert SECRET not in log_path


def test_an_unauthenticated_long_path_is_bounded_alike_everywhere() -> None:
    path = "/" + "a" * (SHOWN_CHARS - 20) + CARD + "b" * 50
    exchange = exchange_of(path, None)
    assert record_path(exchange) == build_event(exchange, MissingKey())["path"]
    assert CARD[:14] not in record_path(exchange)


def test_header_values_in_the_record_are_masked_as_shown_masks_them() -> None:
    exchange = exchange_of("/v1", None)
    value = f"{CARD} {KEY}"
    exchange.request_headers = [("x-note", value)]
    record = build_record(
        exchange,
        ts="2026-01-01T00:00:00.000000Z",
        response_headers=[("x-echo", value)],
        duration_ms=1.0,
        card_numbers="redact",
        credentials="redact",
    )
    assert record["request"]["headers"]["x-note"] == masked(value)  # type: ignore[index]
    assert record["response"]["headers"]["x-echo"] == masked(value)  # type: ignore[index]


@PROPERTY
@given(
    st.lists(st.sampled_from(["/", "a", "-", CARD, KEY, "9" * 7, "é"]), max_size=40).map("".join)
)
def test_record_and_shown_agree_on_any_path(path: str) -> None:
    path = "/" + path
    exchange = exchange_of(path, None)
    assert record_path(exchange) == exchange.shown_path


def test_with_card_masking_off_the_record_and_shown_still_agree() -> None:
    exchange = exchange_of(PATH, None)
    exchange.shown_path = shown(PATH, cards=False)  # the pipeline passes the guard's mode
    assert record_path(exchange, card_numbers="off") == exchange.shown_path
    assert CARD in exchange.shown_path
    assert SECRET not in exchange.shown_path


@PROPERTY
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "-", " ", "4", CARD, CARD[:9], KEY, "_"]), max_size=6).map(
            "".join
        ),
        min_size=1,
        max_size=5,
    )
)
def test_header_values_are_masked_each_as_masked_masks_it_however_many(values: list[str]) -> None:
    # The record first looks at all the values joined (the common case: nothing to mask);
    # that shortcut must never let a value through that `masked` would change.
    exchange = exchange_of("/v1", None)
    exchange.request_headers = [(f"x-h{index}", value) for index, value in enumerate(values)]
    record = build_record(
        exchange,
        ts="2026-01-01T00:00:00.000000Z",
        response_headers=[],
        duration_ms=1.0,
        card_numbers="redact",
        credentials="redact",
    )
    shown_headers = record["request"]["headers"]  # type: ignore[index]
    assert shown_headers == {f"x-h{i}": masked(value) for i, value in enumerate(values)}
