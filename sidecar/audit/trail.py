"""The audit trail as the request path sees it: is there room, and record this exchange."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sidecar.audit.crypto import BodyCipher
from sidecar.audit.events import timestamp
from sidecar.audit.exchange import Exchange, K
from sidecar.audit.record import build_record, dumps_record
from sidecar.audit.writer import DurableStreamWriter
from sidecar.config import Settings
from sidecar.metrics import Metrics

RECORD_FIELD = "record"


class AuditTrail:
    """Where the request path sends its records: refuses early when full, never blocks."""

    def __init__(
        self,
        settings: Settings,
        writer: DurableStreamWriter,
        cipher: BodyCipher | None,
        metrics: Metrics,
    ) -> None:
        self._writer = writer
        self._cipher = cipher
        self._metrics = metrics
        self._key_header = settings.keys.header
        self._cards = settings.data_guard.card_numbers
        self._credentials = settings.data_guard.credentials

    def ready(self) -> bool:
        """False when a record could be neither queued nor spooled: refuse, don't forward."""
        if self._writer.can_accept():
            return True
        self._metrics.audit_records.labels("rejected").inc()
        return False

    def record(self, exchange: Exchange[K], response_headers: Iterable[tuple[str, str]]) -> None:
        """Build, encrypt (when configured) and queue the record of an audited `exchange`."""
        document = build_record(
            exchange,
            ts=timestamp(),
            response_headers=response_headers,
            duration_ms=(time.perf_counter() - exchange.started) * 1000,
            card_numbers=self._cards,
            credentials=self._credentials,
            key_header=self._key_header,
        )
        if self._cipher is not None:
            document = self._cipher.encrypt_record(document)
        if not self._writer.submit(dumps_record(document)):
            self._metrics.audit_records.labels("rejected").inc()
