"""Pure: the durations and times the command line accepts (`30d`, `24h`, `0`, ISO 8601)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `24h`, `30d`, `2w`, or `0`; raise ValueError naming the accepted forms."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 15m, 24h, 30d, 2w or 0")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no offset is given) or a duration from now."""
    moment = now or datetime.now(UTC)
    try:
        return moment + parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2027-01-31T00:00:00Z) nor a duration (30d)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
