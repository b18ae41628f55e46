"""The one registry of background tasks: whatever a part starts outside a request is owned
here, so that shutdown can cancel it and wait for it (`BackgroundTasks.cancel_all`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("sidecar.tasks")


class BackgroundTasks:
    """Tasks that live at most as long as the sidecar; cancelled (and awaited) on the way out.

    A task that finishes on its own leaves the registry, so short-lived ones (a
    `last_used_at` write, a rehash) do not pile up.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coroutine` as a task owned by the registry."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_all(self, patience_s: float = 5.0) -> None:
        """Cancel until every task is done. One cancel is not always enough: on Python 3.11,
        `asyncio.wait_for` (inside redis-py) can swallow a cancel that lands as its inner
        future completes (gh-86296), and the task would carry on into its next wait."""
        deadline = asyncio.get_running_loop().time() + patience_s
        pending = [task for task in self._tasks if not task.done()]
        while pending and asyncio.get_running_loop().time() < deadline:
            for task in pending:
                task.cancel()
            _done, still = await asyncio.wait(pending, timeout=0.1)
            pending = list(still)
        if pending:
            log.error("background tasks did not stop", tasks=[t.get_name() for t in pending])
