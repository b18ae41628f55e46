"""Pure: one request as it travels the proxy, and what its log line, event and record read.

The proxy fills an `Exchange` step by step; the audit record (`sidecar.audit.record`) and the
authentication event (`sidecar.audit.events`) are built from it. A new record field is a field
here and a line in the record builder: no signature in between changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sidecar.audit.record import BodyCapture, CapturedBody


class KeyHolder(Protocol):
    """The authenticated key as the audit trail sees it: its public id, name and scopes."""

    @property
    def key_id(self) -> str:
        """The key's public id."""

    @property
    def name(self) -> str:
        """The key's name."""

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes the key holds."""


K = TypeVar("K", bound=KeyHolder)


@dataclass(slots=True)
class Captures:
    """What the audit record will hold of this exchange's bodies."""

    limit: int  # audit.max_body_bytes
    request: BodyCapture
    response: BodyCapture
    mapped: CapturedBody | None = None  # None: forwarded exactly as received
    screened: bool = False  # the guard read the whole body and found nothing to mask
    inspected: bool = True  # False: the guard did not read the whole body (see `note`)
    note: str | None = None  # the guard's note for the log line ("not inspected: …")


@dataclass(slots=True)
class Exchange(Generic[K]):
    """One request on its way through the proxy, filled in as each step learns something."""

    request_id: str
    method: str
    client_ip: str
    path: str  # as received: the record's (bounded there when no key was authenticated)
    shown_path: str  # for events and the log line: `guard.shown.shown(path)`, as the record masks
    started: float  # `time.perf_counter()` when the request arrived
    route: str  # the matched route's label, or the proxy's label for none
    principal: K | None = None  # the authenticated key
    exposed_key_id: str | None = None  # a misplaced key whose secret verified (SPEC §14)
    # Set once the request is to be audited (it passed routing and authorization):
    captures: Captures | None = None
    query: str = ""
    request_headers: Iterable[tuple[str, str]] = ()
    status: int = 500
    upstream_seconds: float | None = None
    recorded: bool = False  # its record has been queued (once: SPEC §7, one per request)
    # For the log line only:
    reason: str | None = None  # why the proxy refused it (the event name, or the detail)
    aborted: str | None = None  # why the upstream's answer broke off midway
