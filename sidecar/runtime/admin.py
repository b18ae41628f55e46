"""The admin listener's application, built from the serving process's own clients: the
admin API shares the proxy's Redis client, `Authenticator` (argon2 cache, per-IP failure
limit) and audit keys, so a key revoked is refused on both ports by the same cache drop."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from sidecar.admin.activity import ActivityReader
from sidecar.admin.context import AdminContext
from sidecar.admin.endpoints import ENDPOINTS
from sidecar.admin.server import create_admin_app
from sidecar.audit.admin_events import open_admin_events
from sidecar.audit.keyfiles import AuditKeys
from sidecar.audit.writer import WriterHooks
from sidecar.config import Settings
from sidecar.dashboard.routes import install_dashboard
from sidecar.keys.authenticator import Authenticator
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.lifecycle import KeyLifecycle
from sidecar.keys.store import KeyStore
from sidecar.metrics import Metrics
from sidecar.storage.client import RedisClient


@dataclass(frozen=True, slots=True)
class AdminParts:
    """What the admin API takes from the serving process."""

    redis: RedisClient
    authenticator: Authenticator
    hasher: SecretHasher
    audit_keys: AuditKeys
    metrics: Metrics


async def open_admin(
    stack: AsyncExitStack,
    settings: Settings,
    parts: AdminParts,
    *,
    security_headers: Mapping[str, str],
    durable_timeout_s: float,
) -> web.Application:
    """The admin application; its admin events writer runs until `stack` closes."""
    admin_events = await stack.enter_async_context(
        open_admin_events(
            parts.redis,
            settings,
            parts.audit_keys.integrity,
            durable_timeout_s=durable_timeout_s,
            hooks=WriterHooks(redis_error=parts.metrics.redis_errors.inc),
        )
    )
    store = KeyStore(parts.redis)
    context = AdminContext(
        settings=settings,
        redis=parts.redis,
        store=store,
        lifecycle=KeyLifecycle(store, settings.keys, parts.hasher, admin_events),
        cipher=parts.audit_keys.cipher,
        admin_events=admin_events,
        authenticator=parts.authenticator,
        activity=ActivityReader(
            parts.redis, settings.archive.url, timeout_s=settings.archive.timeout_s
        ),
        archive_url=settings.archive.url,
    )
    app = create_admin_app(context, ENDPOINTS, security_headers=security_headers)
    install_dashboard(app)  # SPEC §16: the dashboard at `/` of the same listener
    return app
