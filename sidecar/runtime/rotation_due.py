"""`sidecar_keys_rotation_due`: how many active keys are older than `keys.max_age_days`,
counted every few minutes from the key store (SPEC §4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.keys.store import KeyStore
from sidecar.storage.failures import tolerate_redis

ROTATION_SCAN_EVERY_S = 300.0


@dataclass(slots=True)
class RotationDueGauge:
    """Keeps `sidecar_keys_rotation_due`: active keys older than `keys.max_age_days`."""

    store: KeyStore
    max_age_days: int
    report: Callable[[int], None]

    async def update(self) -> None:
        """Count the active keys due for rotation once, and report the number."""
        with tolerate_redis() as call:
            records = await self.store.records()
        if call.failed:
            return  # readiness reports Redis; the gauge keeps its last value
        now = time.time()
        self.report(sum(record.rotation_due(now, self.max_age_days) for record in records))

    async def keep_updated(self) -> None:
        """Run until cancelled: `update` every `ROTATION_SCAN_EVERY_S`."""
        while True:
            await asyncio.sleep(ROTATION_SCAN_EVERY_S)
            await self.update()
