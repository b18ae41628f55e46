"""Pure units of SPEC §14 on the command line: names and scopes matched whole, and text output
that stays inert on a terminal whatever a request carried. No I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.cli.terminal import json_line, printable
from sidecar.config import SCOPE_SHAPE
from sidecar.keys.format import check_name, check_scope

# --- names and scopes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "billing", "Team.svc_1", "ns:app-2", "x" * 64, "-", "..."])
def test_names_in_the_spec_alphabet_are_taken(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, "billing\n", "\nbilling", "bill ing", "bill\x1bing", "{keys}", "a/b", "é", "*"],
    ids=["empty", "65", "trailing-newline", "leading-newline", "space", "escape", "braces",
         "slash", "non-ascii", "star"],
)  # fmt: skip
def test_names_outside_it_are_refused_in_one_line(name: str) -> None:
    with pytest.raises(ValueError, match="is not a name") as raised:
        check_name(name)
    assert "\n" not in str(raised.value)
    assert "\x1b" not in str(raised.value)


@pytest.mark.parametrize(
    "scope", ["*", "orders:read", "orders:*", "Orders:Read", "a.b-c_d:e.f", "r:" + "a" * 62]
)
def test_scopes_of_the_three_shapes_are_taken(scope: str) -> None:
    assert check_scope(scope) == scope
    assert SCOPE_SHAPE.match(scope)  # config's route scopes use .match: it must match whole


@pytest.mark.parametrize(
    "scope",
    ["orders:read\n", "orders:read\r", "*\n", "orders", "orders:", ":read", "a:b:c", "**", "*:read",
     "orders:re*d", "orders: read", "r:" + "a" * 63, ""],
)  # fmt: skip
def test_other_scopes_are_refused_whole(scope: str) -> None:
    with pytest.raises(ValueError, match="is not a scope"):
        check_scope(scope)
    assert SCOPE_SHAPE.match(scope) is None


def test_a_very_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(ValueError, match="is not a name") as raised:
        check_name("y" * 100_000)
    assert len(str(raised.value)) < 200
    assert "100000 characters" in str(raised.value)


# --- text output --------------------------------------------------------------------------

FORGED = [
    ("/v1/\x1b[2Jx", "/v1/\\x1b[2Jx"),
    ("/a\nfake line", "/a\\nfake line"),
    ("/a\r\n", "/a\\r\\n"),
    ("\x00\x07\x7f", "\\x00\\x07\\x7f"),
    ("\x9b31m", "\\x9b31m"),  # C1 CSI: an escape sequence in one byte
    ("x\u202egnp.exe", "x\\u202egnp.exe"),
    ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
    ("\u2066\u2069\u200e\u200f\u061c", "\\u2066\\u2069\\u200e\\u200f\\u061c"),
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
    ("tag\U000e0041", "tag\\U000e0041"),
    ("lone\ud800", "lone\\ud800"),
]


@pytest.mark.parametrize(("raw", "shown"), FORGED)
def test_printable_escapes_every_control_visibly(raw: str, shown: str) -> None:
    assert printable(raw) == shown


@pytest.mark.parametrize("text", ["", "/v1/orders?a=1&b=2", "café ünïcode 注文 🚀", "tab\\x09"])
def test_printable_leaves_plain_text_alone(text: str) -> None:
    assert printable(text) == text


@given(st.text())
def test_printable_output_is_always_one_inert_line(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")  # no lone surrogate left to break `print`


@pytest.mark.parametrize(("raw", "_shown"), FORGED)
def test_json_line_keeps_the_value_and_escapes_the_controls(raw: str, _shown: str) -> None:
    line = json_line({"path": raw, "name": "café"})
    assert line.isprintable()
    assert json.loads(line) == {"path": raw, "name": "café"}
    assert "café" in line  # readable: non-ASCII text is not escaped


@given(st.recursive(st.text() | st.integers() | st.none(), lambda inner: st.lists(inner)))
def test_json_line_round_trips_anything(value: object) -> None:
    line = json_line({"v": value})
    assert line.isprintable()
    assert json.loads(line) == {"v": value}
