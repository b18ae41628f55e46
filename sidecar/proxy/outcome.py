"""What becomes of an exchange once it is answered: its audit record, kept before the answer
is complete (SPEC §17), and the one log line and the metrics every exchange ends with."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from aiohttp import web

from sidecar.audit.exchange import Exchange, K
from sidecar.audit.trail import AuditTrail
from sidecar.errors import Unavailable
from sidecar.metrics import Metrics


async def keep(
    audit: AuditTrail, exchange: Exchange[K], response: web.StreamResponse | None
) -> None:
    """Queue the record of an audited exchange and wait until it is durable (SPEC §17);
    `Unavailable` when it cannot be. Nothing to do for an exchange that is not audited."""
    captures = exchange.captures
    if captures is None or exchange.recorded:
        return
    if isinstance(response, web.Response) and response.body is not None:
        # The proxy answered itself (413, 422, 502, 504…): record what it said.
        captures.response.feed(bytes(response.body))  # type: ignore[arg-type]
    headers = () if response is None else response.headers.items()
    exchange.recorded = True
    await audit.durable(audit.record(exchange, headers))


def record_unanswered(audit: AuditTrail, exchange: Exchange[K]) -> None:
    """The record of an exchange that ends without an answer (the client left, the upstream
    broke off): queued, not waited for — there is no answer to hold back."""
    if exchange.captures is not None and not exchange.recorded:
        exchange.recorded = True
        with contextlib.suppress(Unavailable):
            audit.record(exchange, ())


def finish(exchange: Exchange[K], metrics: Metrics, log: Any) -> None:
    """The metrics and the one log line of every exchange."""
    duration = time.perf_counter() - exchange.started
    metrics.requests.labels(exchange.route, str(exchange.status)).inc()
    metrics.request_duration.observe(duration)
    if exchange.upstream_seconds is not None:
        metrics.upstream_duration.observe(exchange.upstream_seconds)
    extra: dict[str, str] = {}
    if exchange.exposed_key_id is not None:
        extra["key_id"] = exchange.exposed_key_id
    if exchange.reason is not None:
        extra["reason"] = exchange.reason
    if exchange.aborted is not None:
        extra["aborted"] = exchange.aborted
    if exchange.captures is not None and exchange.captures.note is not None:
        extra["guard"] = exchange.captures.note
    log.info(
        "request",
        request_id=exchange.request_id,
        method=exchange.method,
        path=exchange.shown_path,
        status=exchange.status,
        route=exchange.route,
        client_ip=exchange.client_ip,
        key_name=exchange.principal.name if exchange.principal else None,
        duration_ms=round(duration * 1000, 3),
        **extra,
    )
