"""Pure units of `sidecar.durations`: the durations and moments the command line accepts, and
how they are said back. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sidecar.durations import describe, iso, parse_duration, parse_moment

# --- durations ----------------------------------------------------------------------------

YEAR = timedelta(days=365)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("1.5h", 5400),
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        (" 24h ", 86400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, at_most=YEAR) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "10", "-1d", "1y", "d", "1 d", "1h30m", "0s0", "tomorrow", "1h\n1h", "1h\x00"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text, at_most=YEAR)


@pytest.mark.parametrize(
    "text", ["366d", "53w", "99999999999d", "9" * 400 + "d", "31536000.001s", "8785h"]
)
def test_parse_duration_refuses_more_than_its_bound_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match=r"too long: at most 365d") as raised:
        parse_duration(text, at_most=YEAR)
    assert "\n" not in str(raised.value)
    assert len(str(raised.value)) < 200


def test_parse_duration_takes_its_bound_exactly() -> None:
    assert parse_duration("365d", at_most=YEAR) == YEAR
    assert parse_duration("52w", at_most=YEAR) == timedelta(weeks=52)


def test_parse_moment() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_moment("30d", now=now, at_most=YEAR) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_moment("2027-02-01T00:00:00Z", now=now, at_most=YEAR) == datetime(
        2027, 2, 1, tzinfo=UTC
    )
    assert parse_moment("2027-02-01T02:00:00+02:00", now=now, at_most=YEAR) == datetime(
        2027, 2, 1, tzinfo=UTC
    )
    naive_is_utc = parse_moment("2027-02-01T00:00:00", now=now, at_most=YEAR)
    assert naive_is_utc == datetime(2027, 2, 1, tzinfo=UTC)
    assert naive_is_utc.tzinfo is not None
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_moment("next tuesday", now=now, at_most=YEAR)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "has passed"),
        ("2026-12-31T23:59:59Z", "has passed"),
        ("2027-01-01T00:00:00Z", "has passed"),
        ("0001-01-01T00:00:00+14:00", "has passed"),
        ("2028-01-02T00:00:00Z", "too far ahead: at most 365d"),
        ("9999-12-31T23:59:59-14:00", "too far ahead"),
        ("367d", "too long: at most 365d from now"),
        ("99999999999d", "too long: at most 365d from now"),
        ("10000-01-01T00:00:00Z", "neither an ISO 8601 time"),
    ],
)
def test_parse_moment_refuses_the_past_and_the_too_far(text: str, problem: str) -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match=problem):
        parse_moment(text, now=now, at_most=YEAR)


def test_describe_says_a_bound_in_its_largest_unit() -> None:
    assert describe(YEAR) == "365d"
    assert describe(timedelta(hours=36)) == "36h"
    assert describe(timedelta(minutes=90)) == "90m"
    assert describe(timedelta(seconds=61)) == "61s"


def test_iso() -> None:
    assert iso(None) is None
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(datetime(2027, 2, 1, 12, 30, tzinfo=UTC).timestamp()) == "2027-02-01T12:30:00Z"
