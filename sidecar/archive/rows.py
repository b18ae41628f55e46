"""Pure: a stream entry as a row of its table, or the reason it cannot be one (a poison entry).

The document is kept byte for byte (as UTF-8 text): its chain, its MAC and its encrypted fields
are checked later on exactly what the stream held. The columns beside it are read from it for
the queries; a metadata value of the wrong type is left NULL (the document still has it), but
an entry without a readable time or request id cannot be placed, and is poison.

A record's own `ts` (the request's time) decides its partition, so it must fall within the
days the archive keeps: no earlier than the retention allows, no later than the partitions
made ahead. Anything else would need a partition retention drops at once, or one that was
never made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from sidecar.archive.tables import (
    ADMIN_EVENTS,
    AHEAD_DAYS,
    AUDIT_RECORDS,
    AUTH_EVENTS,
    ArchivedStream,
)

_BIGINT_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1
OUT_OF_RANGE = "ts outside the archive's range"

# (entry id, fields) as redis-py returns a stream entry; fields is None for an entry deleted
# while it was pending.
Entry = tuple[bytes, Mapping[bytes, bytes] | None]


@dataclass(frozen=True, slots=True)
class Row:
    """One entry as its table's row: `values` in the order of `table.columns`."""

    entry_id: str
    ts: datetime
    values: tuple[object, ...]

    @property
    def document(self) -> str:
        """The document as the stream held it (the last column of every record table)."""
        text = self.values[-1]
        assert isinstance(text, str)
        return text

    @property
    def day(self) -> date:
        """The UTC day whose partition holds the row."""
        return self.ts.date()


@dataclass(frozen=True, slots=True)
class Poison:
    """An entry that cannot be archived: parked in the dead-letter stream with `reason`.

    `value` is the field's bytes as the stream held them (empty when the field is missing)."""

    entry_id: str
    value: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class TsSpan:
    """The record times the archive takes: [earliest, latest)."""

    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, now: datetime, retention_days: int) -> TsSpan:
        """From `retention_days` before `now` to the end of the last partition made ahead."""
        tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return cls(now - timedelta(days=retention_days), tomorrow + timedelta(days=AHEAD_DAYS))

    def __contains__(self, ts: object) -> bool:
        return isinstance(ts, datetime) and self.earliest <= ts < self.latest


class _Unplaceable(ValueError):
    """Why an entry cannot be a row (a fixed phrase: never the entry's content)."""


def extract_rows(
    entries: Iterable[Entry], stream: ArchivedStream, span: TsSpan
) -> tuple[list[Row], list[Poison]]:
    """The rows of `entries` (read from `stream`) and the poison among them, each in stream
    order. An entry deleted while pending (no fields) is neither: nothing is left to archive."""
    rows: list[Row] = []
    poison: list[Poison] = []
    for raw_id, fields in entries:
        if fields is None:
            continue
        entry_id = raw_id.decode("ascii")
        value = fields.get(stream.field.encode(), b"")
        try:
            rows.append(extract_row(entry_id, fields, stream, span))
        except _Unplaceable as problem:
            poison.append(Poison(entry_id, value, str(problem)))
    return rows, poison


def extract_row(
    entry_id: str, fields: Mapping[bytes, bytes], stream: ArchivedStream, span: TsSpan
) -> Row:
    """The row of one entry; `ValueError` (its message the reason) when it is poison."""
    raw = fields.get(stream.field.encode())
    if raw is None:
        raise _Unplaceable(f"no {stream.field!r} field")
    try:
        text = raw.decode("utf-8")
        document = _parse(raw, text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Unplaceable(f"the {stream.field!r} field is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise _Unplaceable(f"the {stream.field!r} field is not a JSON object")
    stream_ms, stream_seq = _stream_id(entry_id)
    ts = _timestamp(document.get("ts"))
    if ts not in span:
        raise _Unplaceable(OUT_OF_RANGE)
    request_id = _text(document.get("request_id"))
    if request_id is None and stream.table is not ADMIN_EVENTS:
        raise _Unplaceable("no request_id")
    head = (
        ts,
        stream_ms,
        stream_seq,
        request_id,
        _text(document.get("writer")),
        _integer(document.get("seq"), _BIGINT_MAX),
        _text(document.get("prev")),
        _text(document.get("mac")),
    )
    return Row(entry_id, ts, (*head, *_metadata(stream, document), _storable(text)))


def _parse(raw: bytes, text: str) -> Any:
    """The entry's JSON: orjson (~5x the standard library on a 4 KB record) for what the
    sidecar writes; the standard library for what orjson refuses but JSON allows (a lone
    surrogate escape), so such an entry is judged by its content, not by the parser."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _metadata(stream: ArchivedStream, document: Mapping[str, Any]) -> tuple[object, ...]:
    if stream.table is AUDIT_RECORDS:
        request, response = _section(document, "request"), _section(document, "response")
        return (
            _text(document.get("method")),
            _integer(response.get("status"), _INT_MAX),
            _text(document.get("key_id")),
            _text(document.get("key_name")),
            _text(document.get("client_ip")),
            _number(document.get("duration_ms")),
            _integer(request.get("body_bytes"), _BIGINT_MAX),
            _integer(response.get("body_bytes"), _BIGINT_MAX),
        )
    if stream.table is AUTH_EVENTS:
        event = _text(document.get("event"))
        if event is None:
            raise _Unplaceable("no event name")
        return (
            event,
            _text(document.get("key_id")),
            _text(document.get("key_name")),
            _text(document.get("client_ip")),
        )
    return (
        _text(document.get("action")),
        _text(document.get("actor_key_id")),
        _text(document.get("actor_key_name")),
    )


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    if not (ms.isdigit() and seq.isdigit()) or max(int(ms), int(seq)) > _BIGINT_MAX:
        raise _Unplaceable("the stream id does not fit the archive's bigint columns")
    return int(ms), int(seq)


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise _Unplaceable("no ts")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Unplaceable("the ts is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise _Unplaceable("the ts has no time zone")
    return moment.astimezone(UTC)


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = document.get(name)
    return section if isinstance(section, dict) else {}


def _text(value: object) -> str | None:
    """A string PostgreSQL can store as text, else None."""
    if not isinstance(value, str):
        return None
    try:
        return _storable(value)
    except _Unplaceable:
        return None


def _storable(text: str) -> str:
    # json.loads turns `\u0000` and lone `\ud800` escapes into characters that PostgreSQL's
    # text (NUL) or UTF-8 (surrogates) cannot hold. The document column holds the entry's
    # bytes, which are escaped JSON and so never contain either; this guards the columns.
    if "\x00" in text:
        raise _Unplaceable("a text value holds NUL, which PostgreSQL text cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Unplaceable("a text value is not valid Unicode") from None
    return text


def _integer(value: object, largest: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -largest - 1 <= value <= largest else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None
