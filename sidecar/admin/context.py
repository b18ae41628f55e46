"""What every admin handler is given: the `AdminContext` (shared clients and services) and the
authenticated `AdminCaller` of the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from sidecar.audit.admin_events import Actor, AdminEventLog
from sidecar.audit.crypto import BodyCipher
from sidecar.config import Settings
from sidecar.keys.authenticator import Authenticator
from sidecar.keys.lifecycle import KeyLifecycle
from sidecar.keys.store import KeyStore
from sidecar.storage.client import RedisClient


class ActivityReader(Protocol):
    """The activity buckets of a range (`1h`, `24h`, `7d`, `30d`), of one key or of all
    (`sidecar.admin.activity` provides it)."""

    async def buckets(self, range_: str, key_id: str | None) -> dict[str, object]:
        """`{buckets: [{start, allowed, rejected: {event: n}}], totals}` for the range."""


@dataclass(frozen=True, slots=True)
class AdminContext:
    """The admin listener's shared parts, built once by the runtime."""

    settings: Settings
    redis: RedisClient
    store: KeyStore
    lifecycle: KeyLifecycle
    cipher: BodyCipher | None  # decrypts audit records and events when a key is configured
    admin_events: AdminEventLog
    authenticator: Authenticator  # the proxy's: one argon2 cache, one per-IP failure limit
    activity: ActivityReader  # sidecar.admin.activity's, over the archive or Redis counters
    archive_url: str | None = None  # set: lists read the archive with the Redis window


@dataclass(frozen=True, slots=True)
class AdminCaller:
    """The admin key a request was authenticated with."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    client_ip: str
    request_id: str

    def actor(self) -> Actor:
        """The caller as the actor of an admin event."""
        return Actor(
            kind="key",
            name=self.name,
            key_id=self.key_id,
            client_ip=self.client_ip,
            request_id=self.request_id,
        )


CONTEXT = web.AppKey("admin_context", AdminContext)
CALLER = web.RequestKey("admin", AdminCaller)  # set by the authentication middleware
REQUEST_ID = web.RequestKey("admin_request_id", str)  # set first, for every request
