"""Writing JSON documents to a Redis Stream off the request path: queued, batched, pipelined."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("sidecar.streams")

_BATCH = 256
_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0)


class StreamWriter:
    """Queue documents with `submit`; `run` writes them in order with pipelined XADDs.

    While Redis is unreachable the batch in hand is retried (in order) and new documents wait
    in the bounded queue; `on_dropped` is told of any document the full queue turned away.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        field: str,
        *,
        max_queue: int = 50_000,
        on_written: Callable[[int], None] = lambda _n: None,
        on_dropped: Callable[[int], None] = lambda _n: None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._redis = redis
        self.stream = stream
        self._field = field
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._on_error = on_error

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, document: bytes) -> bool:
        if len(self._queue) >= self._max_queue:
            self._on_dropped(1)
            return False
        self._queue.append(document)
        self._idle.clear()
        self._wake.set()
        return True

    async def run(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(_BATCH, len(self._queue)))]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for document in batch:
                        pipe.xadd(self.stream, {self._field: document})
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._on_error()
                if failures == 0:
                    log.warning("stream write failed; retrying", stream=self.stream, error=str(exc))
                await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                failures += 1
                continue
            failures = 0
            for _ in batch:
                self._queue.popleft()
            self._on_written(len(batch))

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything submitted is written; False if `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


async def trim_older_than(redis: aioredis.Redis, stream: str, days: int) -> None:
    """Drop entries older than `days`, judged by the time inside each stream id."""
    cutoff_ms = int((time.time() - days * 86400) * 1000)
    await redis.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=False)
