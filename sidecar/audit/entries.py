"""Pure: one stream entry as a reader gets it — its JSON document, decrypted — or the reason it
cannot be read, so a reader can skip it with a word and go on (SPEC §17)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

Decrypt = Callable[[Mapping[str, object]], dict[str, object]]


class MalformedEntry(ValueError):
    """A stream entry that holds no readable document; the message says why, never what it
    holds (it may be request content)."""


def decode_entry(
    fields: Mapping[bytes, bytes], field: str, decrypt: Decrypt | None = None
) -> dict[str, Any]:
    """The JSON object in `field` of an entry's `fields`, passed through `decrypt` (a
    `BodyCipher.decrypt_record` or `decrypt_event`) when given; `MalformedEntry` if the field is
    missing, not JSON, not an object, or does not decrypt."""
    raw = fields.get(field.encode())
    if raw is None:
        raise MalformedEntry(f"no {field!r} field")
    try:
        # json, not orjson: a document written with `\ud800`-style escapes is valid JSON.
        document = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
        raise MalformedEntry(f"the {field!r} field is not JSON") from None
    if not isinstance(document, dict):
        raise MalformedEntry(f"the {field!r} field is not a JSON object")
    if decrypt is None:
        return document
    try:
        return decrypt(document)
    except ValueError as error:  # names the field and the reason, never the content
        raise MalformedEntry(f"cannot decrypt: {error}") from None


def entry_moment(entry_id: bytes, document: Mapping[str, Any]) -> datetime:
    """When the entry's request happened: its `ts`, else (no readable ts) its stream id's time."""
    ts = document.get("ts")
    if isinstance(ts, str):
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    milliseconds = entry_id.split(b"-", 1)[0]
    return datetime.fromtimestamp(int(milliseconds) / 1000, UTC)


_STATUS = re.compile(r"([1-5])(xx|\d\d)")


def parse_status(text: str) -> tuple[int, int]:
    """A status filter, a code (404) or a class (4xx), as an inclusive range of codes;
    `ValueError` for anything else (the CLI and the admin API word it their way)."""
    shape = _STATUS.fullmatch(text.lower())
    if shape is None:
        raise ValueError("use a code (404) or a class (4xx)")
    if shape.group(2) == "xx":
        low = int(shape.group(1)) * 100
        return low, low + 99
    return int(text), int(text)
