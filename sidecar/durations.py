"""Pure (but for the clock when no `now` is given): the durations and times the command line
accepts (`30d`, `24h`, `0`, ISO 8601).

Every value is bounded by its caller (`at_most`): a duration too large for `timedelta` or a
time beyond year 9999 is a ValueError with one readable line, never an OverflowError.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FORMS = "use e.g. 90s, 15m, 24h, 30d, 2w or 0"


def parse_duration(text: str, *, at_most: timedelta) -> timedelta:
    """`90s`, `15m`, `24h`, `30d`, `2w`, or `0`, no longer than `at_most`; raise ValueError
    naming the accepted forms or the bound."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{_shown(text)} is not a duration: {_FORMS}")
    # Compared as a float before any timedelta is made: 99999999999d does not fit one.
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds <= at_most.total_seconds():  # `not <=`: also refuses inf
        raise ValueError(f"{_shown(text)} is too long: at most {describe(at_most)}")
    return timedelta(seconds=seconds)


def parse_moment(text: str, *, at_most: timedelta, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no offset is given) or a duration from now, later than now
    and no more than `at_most` ahead; raise ValueError otherwise."""
    moment = now or datetime.now(UTC)
    if text.strip() == "0" or _DURATION.fullmatch(text.strip()):
        try:
            span = parse_duration(text, at_most=at_most)
        except ValueError as exc:
            raise ValueError(f"{exc} from now") from None
        if not span:
            raise ValueError("that time has passed")
        return moment + span
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{_shown(text)} is neither an ISO 8601 time (2027-01-31T00:00:00Z) "
            "nor a duration (30d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        ahead = parsed - moment  # an offset near year 1 or 9999 can overflow here
    except OverflowError:
        ahead = timedelta.max if parsed.year > moment.year else timedelta.min
    if ahead <= timedelta(0):
        raise ValueError("that time has passed")
    if ahead > at_most:
        raise ValueError(f"that time is too far ahead: at most {describe(at_most)} from now")
    return parsed


def describe(span: timedelta) -> str:
    """A bound for a message or `--help`: `365d`, `24h`, `90s`."""
    seconds = int(span.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _shown(text: str, limit: int = 70) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def iso(timestamp: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC to the second (`…Z`); None stays None."""
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
