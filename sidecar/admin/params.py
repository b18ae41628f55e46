"""Reading an admin request's query and body: every value parsed and bounded before anything
is read, a bad one answered 400 with a detail that names the parameter and what it takes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sidecar.admin.endpoint import Param
from sidecar.audit.entries import parse_status as parse_status  # one reading, CLI and API
from sidecar.durations import parse_duration
from sidecar.errors import InvalidParameter

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# How far back `since`/`until` reach: the longest retention an operator sets (SPEC §14 bounds).
MAX_BACK = timedelta(days=3650)
MAX_BODY_BYTES = 64 * 1024  # a key's settings, never a payload
_MOMENT_FORMS = "use 30m, 24h, 7d or an RFC 3339 time"
_METHOD = re.compile(r"[A-Z]{1,16}")
_TEXT_MAX = 256
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def read_query(request: web.Request, params: tuple[Param, ...]) -> dict[str, Any]:
    """Each declared parameter's parsed value (None when absent); an undeclared one, a repeated
    one or a bad value is `InvalidParameter`."""
    declared = {param.name: param for param in params}
    values: dict[str, Any] = dict.fromkeys(declared)
    for name in request.query:
        if name not in declared:
            raise InvalidParameter(_shown(name), f"not a parameter here ({_names(params)})")
        texts = request.query.getall(name)
        if len(texts) > 1:
            raise InvalidParameter(name, "give it once")
        try:
            values[name] = declared[name].parse(texts[0])
        except ValueError as exc:
            raise InvalidParameter(name, str(exc)) from None
    return values


async def read_body(request: web.Request) -> Mapping[str, Any]:
    """The request's JSON object (an absent body is `{}`); 400 `body` when it is not one."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidParameter("body", f"at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidParameter("body", f"at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw, object_pairs_hook=_unique_fields)
    except _DuplicateField:
        raise InvalidParameter("body", "a field given twice") from None
    except (ValueError, RecursionError):
        raise InvalidParameter("body", "not JSON") from None
    if not isinstance(document, dict):
        raise InvalidParameter("body", "must be a JSON object")
    return document


class _DuplicateField(Exception):
    pass


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # `{"scopes": ["sidecar:read"], "scopes": ["x:y"]}`: json keeps the last, a log or a
    # gateway in front may read the first. One reading of a body, as SPEC §14 asks.
    document = dict(pairs)
    if len(document) != len(pairs):
        raise _DuplicateField
    return document


def check_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse a field the endpoint does not take (a typo like `expire` would be ignored)."""
    for name in body:
        if name not in allowed:
            raise InvalidParameter(_shown(name), f"not a field here ({', '.join(allowed)})")


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `24h`, `7d` back from now, or an RFC 3339 time (with its offset or `Z`)."""
    text = text.strip()
    moment = now or datetime.now(UTC)
    try:
        return moment - parse_duration(text, at_most=MAX_BACK)
    except ValueError as exc:
        if "too long" in str(exc):
            raise
    if "T" not in text.upper():  # fromisoformat takes a bare date; RFC 3339 does not
        raise ValueError(_MOMENT_FORMS)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(_MOMENT_FORMS) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{_MOMENT_FORMS} (with its offset, e.g. Z)")
    # Paging widens the bounds by the clock skew and turns them into stream ids: year 1 or
    # 9999 overflowed there (a 500), and nothing was written before 1970 anyway.
    if not _EARLIEST <= parsed <= _LATEST:
        raise ValueError(f"{_MOMENT_FORMS} between 1970 and 9000")
    return parsed


def parse_limit(text: str) -> int:
    """An item count from 1 to `MAX_LIMIT`."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(f"a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def parse_method(text: str) -> str:
    """An HTTP method name, upper-cased."""
    if _METHOD.fullmatch(text.upper()) is None:
        raise ValueError("an HTTP method such as GET or POST")
    return text.upper()


def parse_path_prefix(text: str) -> str:
    """A path prefix: starts with `/`."""
    if not text.startswith("/") or len(text) > 2048:
        raise ValueError("a path starting with / (at most 2048 characters)")
    return text


def parse_text(text: str) -> str:
    """A name, id, event or address to match exactly: 1 to 256 printable characters."""
    if not 1 <= len(text) <= _TEXT_MAX or not text.isprintable():
        raise ValueError(f"1 to {_TEXT_MAX} printable characters")
    return text


def _names(params: tuple[Param, ...]) -> str:
    return ", ".join(param.name for param in params) or "none"


def _shown(name: str) -> str:
    # A name the client made up is echoed only when short and printable: it might be a key.
    return repr(name) if len(name) <= 32 and name.isprintable() else "a parameter"
