"""Authentication events (SPEC §8): built here, written to `audit.events_stream` off-path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sidecar.audit.writer import DurableStreamWriter
from sidecar.metrics import Metrics

EVENT_FIELD = "event"


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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

    def emit(
        self,
        event: str,
        *,
        request_id: str,
        method: str,
        path: str,
        client_ip: str,
        detail: str,
        key_id: str | None = None,
        key_name: str | None = None,
    ) -> None:
        self._metrics.auth_events.labels(event).inc()
        document = build_event(
            event,
            request_id=request_id,
            method=method,
            path=path,
            client_ip=client_ip,
            detail=detail,
            key_id=key_id,
            key_name=key_name,
        )
        self._writer.submit(json.dumps(document, separators=(",", ":")).encode())
