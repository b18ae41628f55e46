"""`last_used_at`: written at most once a minute per key, and never on the request path."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.keys.store import KeyStore
from sidecar.storage.failures import tolerate_redis
from sidecar.tasks import BackgroundTasks

LAST_USED_EVERY_S = 60.0
MAX_TRACKED = 100_000  # bounded: beyond it the oldest half is forgotten


class UsageTracker:
    """Notes each use of a key and writes `last_used_at` in a background task, throttled
    per key; a write that fails is retried on the key's next use."""

    def __init__(
        self,
        store: KeyStore,
        tasks: BackgroundTasks,
        *,
        on_redis_error: Callable[[], None] = lambda: None,
        every_s: float = LAST_USED_EVERY_S,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._on_redis_error = on_redis_error
        self._every_s = every_s
        self._last_touch: dict[str, float] = {}

    def note_use(self, key_id: str, now: float) -> None:
        """A request used `key_id` at `now`: schedule a write unless one was made lately."""
        last = self._last_touch.get(key_id)
        if last is not None and now - last < self._every_s:
            return
        self._last_touch[key_id] = now
        if len(self._last_touch) > MAX_TRACKED:
            for stale_id in list(self._last_touch)[: MAX_TRACKED // 2]:
                del self._last_touch[stale_id]
        self._tasks.start(self._touch(key_id, now))

    async def _touch(self, key_id: str, now: float) -> None:
        with tolerate_redis(self._on_redis_error) as call:
            await self._store.touch(key_id, now)
        if call.failed:
            self._last_touch.pop(key_id, None)  # try again on the next use
