"""The audit trail as the request path sees it: is there room, and record this exchange."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sidecar.audit.activity_counters import ALLOWED, CountActivity
from sidecar.audit.crypto import BodyCipher
from sidecar.audit.events import timestamp
from sidecar.audit.exchange import Exchange, K
from sidecar.audit.record import build_record, dumps_record
from sidecar.audit.writer import AuditUnavailable, DurableStreamWriter
from sidecar.config import Settings
from sidecar.errors import Unavailable
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
        *,
        durable_timeout_s: float,
        count_activity: CountActivity | None = None,
    ) -> None:
        self._writer = writer
        self._count_activity = count_activity
        self._durable_timeout_s = durable_timeout_s
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

    def record(self, exchange: Exchange[K], response_headers: Iterable[tuple[str, str]]) -> int:
        """Build, encrypt (when configured), seal and queue the record of an audited `exchange`:
        its sequence number for `durable`. `Unavailable` (503) when the queue is full."""
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
        seq = self._writer.submit(dumps_record(document))
        if seq is None:
            self._metrics.audit_records.labels("rejected").inc()
            raise Unavailable("the audit trail cannot take records right now", retry_after=5)
        if self._count_activity is not None:  # queued is kept: spooled at worst (SPEC §17)
            principal = exchange.principal
            self._count_activity(principal.key_id if principal else None, ALLOWED)
        return seq

    async def durable(self, seq: int) -> None:
        """Return once record `seq` is in Redis or fsync'd on disk (SPEC §17: no answer
        without a durable record); `Unavailable` when it cannot be."""
        try:
            await self._writer.durable(seq, self._durable_timeout_s)
        except AuditUnavailable as exc:
            self._metrics.audit_records.labels("undurable").inc()
            detail = f"the audit record could not be kept ({exc})"
            raise Unavailable(detail, retry_after=5) from None
