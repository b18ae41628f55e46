"""The admin events stream as the admin API and the CLI see it: `record` returns once the
event is durable (SPEC §16, §17).

Sealed and spooled like the other streams (a `DurableStreamWriter`): an admin action is
reported done only once its event is kept, so no change to a key goes unaccounted for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from sidecar.audit.admin_actions import (
    ADMIN_EVENT_FIELD,
    ADMIN_EVENTS_STREAM,
    Action,
    Actor,
    build_admin_event,
)
from sidecar.audit.events import timestamp
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.spool import Spool, SpoolBudget
from sidecar.audit.writer import AuditUnavailable, DurableStreamWriter, WriterHooks
from sidecar.config import Settings
from sidecar.errors import Unavailable
from sidecar.storage.client import RedisClient

__all__ = [
    "ADMIN_EVENTS_STREAM",
    "ADMIN_EVENT_FIELD",
    "ADMIN_SPOOL_SHARE",
    "Action",
    "Actor",
    "AdminEventLog",
    "open_admin_events",
]

ADMIN_SPOOL_SHARE = 64  # the admin events may spool 1/64 of audit.spool_max_bytes: they are few


class AdminEventLog:
    """Writes admin events through `writer` and waits for each to be kept."""

    def __init__(self, writer: DurableStreamWriter, *, durable_timeout_s: float) -> None:
        self.writer = writer
        self._durable_timeout_s = durable_timeout_s

    async def record(
        self,
        action: Action,
        actor: Actor,
        target: str | None,
        detail: dict[str, object] | None = None,
    ) -> dict[str, object]:
        """Write one event and return its document once it is in Redis or the fsync'd spool;
        `Unavailable` (503) when it cannot be kept."""
        document = build_admin_event(timestamp(), action, actor, target, detail)
        seq = self.writer.submit(orjson.dumps(document))
        try:
            if seq is None:
                raise AuditUnavailable("the admin event queue is full")
            await self.writer.durable(seq, self._durable_timeout_s)
        except AuditUnavailable as exc:
            raise Unavailable(f"the admin event could not be kept ({exc})", retry_after=5) from None
        return document


@asynccontextmanager
async def open_admin_events(
    redis: RedisClient,
    settings: Settings,
    integrity: IntegrityKeys | None,
    *,
    durable_timeout_s: float,
    hooks: WriterHooks | None = None,
) -> AsyncIterator[AdminEventLog]:
    """An `AdminEventLog` whose writer runs until the context exits; then what is queued goes
    to Redis or, within `shutdown.grace_s`, to the spool, which the next serving process
    adopts (so an event recorded while Redis was away is not lost when the CLI exits)."""
    spool = Spool(
        settings.audit.spool_dir,
        "admin",
        SpoolBudget(settings.audit.spool_max_bytes // ADMIN_SPOOL_SHARE),
        stream=ADMIN_EVENTS_STREAM,
    )
    writer = DurableStreamWriter(
        redis,
        ADMIN_EVENTS_STREAM,
        ADMIN_EVENT_FIELD,
        spool,
        integrity,
        writer_id=spool.owner,  # one owner, one chain: as the other streams' writers
        hooks=hooks or WriterHooks(),
    )
    task = asyncio.create_task(writer.run())
    try:
        yield AdminEventLog(writer, durable_timeout_s=durable_timeout_s)
    finally:
        await writer.flush(settings.shutdown.grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        spool.close()
