"""The audit trail as the request path sees it: is there room, and record this exchange."""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.audit.crypto import BodyCipher
from sidecar.audit.events import timestamp
from sidecar.audit.record import CapturedBody, build_record, dumps_record, recordable_headers
from sidecar.audit.writer import DurableStreamWriter
from sidecar.config import Settings
from sidecar.metrics import Metrics

RECORD_FIELD = "record"


class AuditTrail:
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

    def record(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        query: str,
        client_ip: str,
        key_name: str | None,
        key_id: str | None,
        scopes: Sequence[str],
        request_headers: Sequence[tuple[str, str]],
        raw_body: CapturedBody,
        mapped_body: CapturedBody | None,
        status: int,
        response_headers: Sequence[tuple[str, str]],
        response_body: CapturedBody,
        duration_ms: float,
        upstream_ms: float | None,
        request_screened: bool = False,
        request_inspected: bool = True,
    ) -> None:
        document = build_record(
            ts=timestamp(),
            request_id=request_id,
            method=method,
            path=path,
            query=query,
            client_ip=client_ip,
            key_name=key_name,
            key_id=key_id,
            scopes=scopes,
            request_headers=recordable_headers(request_headers, self._key_header),
            raw_body=raw_body,
            mapped_body=mapped_body,
            response_status=status,
            response_headers=recordable_headers(response_headers, self._key_header),
            response_body=response_body,
            duration_ms=round(duration_ms, 3),
            upstream_ms=None if upstream_ms is None else round(upstream_ms, 3),
            card_numbers=self._cards,
            credentials=self._credentials,
            request_screened=request_screened,
            request_inspected=request_inspected,
        )
        if self._cipher is not None:
            document = self._cipher.encrypt_record(document)
        if not self._writer.submit(dumps_record(document)):
            self._metrics.audit_records.labels("rejected").inc()
