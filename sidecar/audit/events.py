"""Authentication events (SPEC §8): built here, written to `audit.events_stream` off-path."""

from __future__ import annotations

import time
from datetime import datetime

import orjson

from sidecar.audit.writer import DurableStreamWriter
from sidecar.metrics import Metrics

EVENT_FIELD = "event"
# Events are written for requests nobody authenticated: what one of them stores is bounded.
SHOWN_CHARS = 1024


_second: tuple[int, str] = (-1, "")


def timestamp(moment: datetime | None = None) -> str:
    """`2026-11-29T10:00:00.123456Z`. Formatting the date costs more than a request's other
    bookkeeping, so the part up to the second is made once per second."""
    global _second  # a cache of a pure function's result, not state
    if moment is not None:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"


def bounded(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


def build_event(
    event: str,
    *,
    request_id: str,
    method: str,
    path: str,
    client_ip: str,
    detail: str,
    key_id: str | None = None,
    key_name: str | None = None,
) -> dict[str, object]:
    """One event document; it carries a key's public id and name at most, never its secret."""
    document: dict[str, object] = {
        "v": 1,
        "ts": timestamp(),
        "event": event,
        "request_id": request_id,
        "method": method,
        "path": path,
        "client_ip": client_ip,
    }
    if key_id is not None:
        document["key_id"] = key_id
    if key_name is not None:
        document["key_name"] = key_name
    document["detail"] = detail
    return document


class EventLog:
    def __init__(self, writer: DurableStreamWriter, metrics: Metrics) -> None:
        self._writer = writer
        self._metrics = metrics

    def emit(self, document: dict[str, object]) -> None:
        """Count and queue one event built by `build_event`."""
        self._metrics.auth_events.labels(str(document["event"])).inc()
        self._writer.submit(orjson.dumps(document))
