"""Authentication events (SPEC §8): built here, written to `audit.events_stream` off-path."""

from __future__ import annotations

import time
from datetime import datetime

import orjson

from sidecar.audit.activity_counters import CountActivity
from sidecar.audit.crypto import BodyCipher
from sidecar.audit.exchange import Exchange, K
from sidecar.audit.writer import AuditUnavailable, DurableStreamWriter
from sidecar.errors import AuthenticationFailed, Rejected, Unavailable
from sidecar.metrics import Metrics

EVENT_FIELD = "event"


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


def build_event(exchange: Exchange[K], rejection: Rejected) -> dict[str, object]:
    """The event of a refused `exchange`; it carries a key's public id and name at most, never
    its secret: the key that failed, else the authenticated one, else an exposed one's id."""
    assert rejection.event is not None, "only a rejection with an event name has an event"
    key_id: str | None = None
    key_name: str | None = None
    if isinstance(rejection, AuthenticationFailed):
        key_id, key_name = rejection.key_id, rejection.key_name
    elif exchange.principal is not None:
        key_id, key_name = exchange.principal.key_id, exchange.principal.name
    else:
        key_id = exchange.exposed_key_id
    document: dict[str, object] = {
        "v": 1,
        "ts": timestamp(),
        "event": rejection.event,
        "request_id": exchange.request_id,
        "method": exchange.method,
        "path": exchange.shown_path,
        "client_ip": exchange.client_ip,
    }
    if key_id is not None:
        document["key_id"] = key_id
    if key_name is not None:
        document["key_name"] = key_name
    document["detail"] = rejection.detail
    return document


class EventLog:
    """The events stream as the request path sees it: count, queue, and wait until it is kept."""

    def __init__(
        self,
        writer: DurableStreamWriter,
        metrics: Metrics,
        cipher: BodyCipher | None,
        *,
        durable_timeout_s: float,
        count_activity: CountActivity | None = None,
    ) -> None:
        self._writer = writer
        self._count_activity = count_activity
        self._metrics = metrics
        self._cipher = cipher
        self._durable_timeout_s = durable_timeout_s

    async def emit(self, document: dict[str, object]) -> None:
        """Count, queue and wait for one event built by `build_event` to be durable (SPEC §17:
        a refusal is answered only once its event is kept); `Unavailable` when it cannot be."""
        event, key_id = str(document["event"]), document.get("key_id")
        self._metrics.auth_events.labels(event).inc()
        if self._cipher is not None:
            document = self._cipher.encrypt_event(document)  # SPEC §17: the path is content
        seq = self._writer.submit(orjson.dumps(document))
        if seq is not None and self._count_activity is not None:
            self._count_activity(key_id if isinstance(key_id, str) else None, event)
        try:
            if seq is None:
                raise AuditUnavailable("the event queue is full")
            await self._writer.durable(seq, self._durable_timeout_s)
        except AuditUnavailable as exc:
            raise Unavailable(f"the event could not be kept ({exc})", retry_after=5) from None
