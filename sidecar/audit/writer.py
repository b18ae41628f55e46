"""Durable, exactly-once writing of documents to a Redis Stream, off the request path.

Documents are numbered per writer (a random id per process, then 1, 2, 3…). A Lua script
appends a batch and records the highest number it has appended for that writer, atomically,
skipping numbers it has already seen; so a batch retried after a lost reply, or a spool
replayed after a crash, never appears twice. While Redis is unreachable, batches go to the
disk spool (fsync'd) and are replayed in order, before anything newer, when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import structlog

from sidecar.audit.spool import Spool, SpooledRecord, SpoolFull
from sidecar.storage.client import RedisClient
from sidecar.storage.failures import REDIS_FAILURES

log = structlog.get_logger("sidecar.audit.writer")

BATCH = 256
_SEQ_TTL_S = 30 * 86400
_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0)
ADOPT_EVERY_S = 30.0  # how often to look for spools of processes that are gone

# KEYS: stream, this writer's high-water mark. ARGV: field, ttl, then seq/document pairs.
_APPEND = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local written = 0
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[i + 1])
    last = seq
    written = written + 1
  end
end
redis.call('SET', KEYS[2], last, 'EX', ARGV[2])
return written
"""


@dataclass
class WriterHooks:
    """Where the writer reports what happened, for the metrics."""

    written: Callable[[int], None] = lambda _n: None
    spooled: Callable[[int], None] = lambda _n: None
    replayed: Callable[[int], None] = lambda _n: None
    redis_error: Callable[[], None] = lambda: None
    depth: Callable[[int], None] = lambda _n: None
    spool_bytes: Callable[[int], None] = lambda _n: None


@dataclass
class DurableStreamWriter:
    """Appends documents to a Redis Stream off the request path; spools them while it cannot."""

    redis: RedisClient
    stream: str
    field_name: str
    spool: Spool
    max_queue: int = 50_000
    hooks: WriterHooks = field(default_factory=WriterHooks)

    def __post_init__(self) -> None:
        self.writer_id = self.spool.owner  # the spool directory is named after its writer
        self._seq = 0
        self._queue: deque[SpooledRecord] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing waits in memory
        self._script = self.redis.register_script(_APPEND)
        # The hash tag puts the mark in the stream's slot, so the script is legal on a cluster.
        self._mark_prefix = f"{{{self.stream}}}:writer:"
        self._failures = 0
        # Records wait in memory that the spool refused: until they are written somewhere,
        # nothing new may be accepted (SPEC §7: a full spool means 503, not unaudited requests).
        self._stuck = False
        self._update_idle()
        self.hooks.spool_bytes(self.spool.size)

    def can_accept(self) -> bool:
        """Whether a new document is sure to be kept: room in memory and on disk."""
        if self._stuck:
            return False
        return len(self._queue) < self.max_queue and self.spool.has_room()

    def submit(self, document: bytes) -> bool:
        """Queue `document` for writing; False (nothing queued) when the memory queue is full."""
        if len(self._queue) >= self.max_queue:
            return False
        self._seq += 1
        self._queue.append(SpooledRecord(self.writer_id, self._seq, document))
        self._idle.clear()
        self._wake.set()
        self.hooks.depth(len(self._queue))
        return True

    @property
    def depth(self) -> int:
        """Documents waiting in memory."""
        return len(self._queue)

    async def run(self) -> None:
        """Write queued and spooled documents until cancelled; never returns otherwise."""
        adopt_at = float("-inf")
        while True:
            if time.monotonic() >= adopt_at:
                adopt_at = time.monotonic() + ADOPT_EVERY_S
                if self.spool.adopt():
                    self.hooks.spool_bytes(self.spool.size)
            if self.spool.empty and not self._queue:
                self._update_idle()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), ADOPT_EVERY_S)
                continue
            if await self._step():
                self._failures = 0
            else:
                self.hooks.redis_error()
                await asyncio.sleep(_BACKOFF_S[min(self._failures, len(_BACKOFF_S) - 1)])
                self._failures += 1

    async def _step(self) -> bool:
        """One unit of work; False when Redis failed (the caller backs off)."""
        segment = self.spool.oldest()
        if segment is not None:
            # Older records are on disk: keep order by spooling the new ones behind them.
            self._spool_queue()
            return await self._replay(segment)
        batch = list(islice(self._queue, BATCH))
        try:
            await self._append(batch)
        except REDIS_FAILURES as exc:
            self._log_failure(exc)
            self._spool_queue()
            return False
        # By seq, not by count: while the script ran, `flush` may have spooled (and dropped from
        # memory) part of this batch, and newer records may have been queued behind it.
        last = batch[-1].seq
        while self._queue and self._queue[0].seq <= last:
            self._queue.popleft()
        self.hooks.written(len(batch))
        self.hooks.depth(len(self._queue))
        self._update_idle()
        return True

    async def _replay(self, segment: Path) -> bool:
        records = list(self.spool.read(segment))
        try:
            for start in range(0, len(records), BATCH):
                await self._append(records[start : start + BATCH])
        except REDIS_FAILURES as exc:
            self._log_failure(exc)
            return False
        self.spool.remove(segment)
        self.hooks.replayed(len(records))
        self.hooks.spool_bytes(self.spool.size)
        log.info("spool segment replayed", stream=self.stream, records=len(records))
        return True

    def _spool_queue(self) -> None:
        """Move what waits in memory to disk, batch by batch, while there is room."""
        while self._queue:
            batch = list(islice(self._queue, BATCH))
            try:
                self.spool.append(batch)
            except SpoolFull as exc:
                if not self._stuck:
                    log.error("spool refused records; refusing new ones", error=str(exc))
                self._stuck = True  # kept in memory; new requests are refused via can_accept()
                break
            for _ in batch:
                self._queue.popleft()
            self.hooks.spooled(len(batch))
        self.hooks.depth(len(self._queue))
        self.hooks.spool_bytes(self.spool.size)
        self._update_idle()

    async def _append(self, batch: list[SpooledRecord]) -> None:
        by_writer: dict[str, list[SpooledRecord]] = {}
        for record in batch:
            by_writer.setdefault(record.writer_id, []).append(record)
        for writer_id, records in by_writer.items():
            args: list[str | bytes | int] = [self.field_name, _SEQ_TTL_S]
            for record in records:
                args += [record.seq, record.document]
            await self._script(keys=[self.stream, self._mark_prefix + writer_id], args=args)

    def _log_failure(self, exc: BaseException) -> None:
        if self._failures == 0:
            log.warning("stream unreachable; spooling", stream=self.stream, error=str(exc))

    def _update_idle(self) -> None:
        if not self._queue:
            self._stuck = False
            self._idle.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until nothing is left in memory (all in Redis or on disk), at most `timeout_s`;
        then spool whatever is still waiting, so a restart replays it. True if nothing was
        left over for the spool."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            self._spool_queue()
            return False
        return True
