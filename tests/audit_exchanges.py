"""Exchanges for tests of the audit trail: records and events built from given fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidecar.audit.events import build_event
from sidecar.audit.exchange import Captures, Exchange
from sidecar.audit.record import BodyCapture, CapturedBody, build_record
from sidecar.errors import AuthenticationFailed


@dataclass(frozen=True, slots=True)
class Key:
    """An authenticated key as the audit trail reads one."""

    key_id: str
    name: str
    scopes: tuple[str, ...]


def tee(body: CapturedBody) -> BodyCapture:
    """A capture that reads back as `body` (its first bytes, and its whole length)."""
    held = BodyCapture(len(body.data))
    held.feed(body.data)
    held.feed(bytes(body.total - len(body.data)))
    return held


def a_record(
    *,
    ts: str,
    request_id: str,
    method: str,
    path: str,
    query: str,
    client_ip: str,
    key_name: str | None,
    key_id: str | None,
    scopes: Sequence[str],
    request_headers: Mapping[str, str],
    raw_body: CapturedBody,
    mapped_body: CapturedBody | None,
    response_status: int,
    response_headers: Mapping[str, str],
    response_body: CapturedBody,
    duration_ms: float,
    upstream_ms: float | None,
    card_numbers: str,
    credentials: str,
    request_screened: bool = False,
    request_inspected: bool = True,
) -> dict[str, object]:
    """The record `build_record` makes of an exchange holding these fields."""
    key = None if key_name is None or key_id is None else Key(key_id, key_name, tuple(scopes))
    captures = Captures(
        len(raw_body.data),
        tee(raw_body),
        tee(response_body),
        mapped=mapped_body,
        screened=request_screened,
        inspected=request_inspected,
    )
    exchange: Exchange[Key] = Exchange(
        request_id=request_id,
        method=method,
        client_ip=client_ip,
        path=path,
        shown_path=path,
        started=0.0,
        route="(default)",
        principal=key,
        captures=captures,
        query=query,
        request_headers=request_headers.items(),
        status=response_status,
        upstream_seconds=None if upstream_ms is None else upstream_ms / 1000,
    )
    return build_record(
        exchange,
        ts=ts,
        response_headers=response_headers.items(),
        duration_ms=duration_ms,
        card_numbers=card_numbers,
        credentials=credentials,
    )


def an_event(
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
    """The event `build_event` makes of an exchange refused with these fields."""
    exchange: Exchange[Key] = Exchange(
        request_id=request_id,
        method=method,
        client_ip=client_ip,
        path=path,
        shown_path=path,
        started=0.0,
        route="(default)",
    )
    refusal = AuthenticationFailed(detail, event=event, key_id=key_id, key_name=key_name)
    return build_event(exchange, refusal)
