"""Durable, exactly-once, tamper-evident writing of documents to a Redis Stream (SPEC §17).

Documents are sealed in the order they are submitted (`sidecar.audit.integrity`: writer id,
sequence number, the previous document's digest, an HMAC) and numbered per writer (a random id
per process, then 1, 2, 3…). A Lua script appends a batch and records the highest number it has
appended for that writer, atomically, skipping numbers it has already seen; so a batch retried
after a lost reply, or a spool replayed after a crash, never appears twice. While Redis cannot
take them, batches go to the disk spool (fsync'd) and are replayed in order, before anything
newer, when it returns.

"Durable" is what the request path waits for: a document is durable once Redis has
acknowledged it or it is fsync'd in the spool. `durable(seq)` returns then, so no answer is
given while its record is only in memory; it raises `AuditUnavailable` when the document can be
kept nowhere (the spool is full or the disk fails) or not in time.

The writer is supervised: if its loop fails (a bug, a spool that breaks in a way nobody
foresaw), the error is logged, `restarted` reported, readiness fails, and the loop starts again
after a pause with everything still queued in memory.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import structlog

from sidecar.audit.integrity import IntegrityKeys, seal
from sidecar.audit.spool import Spool, SpooledRecord, SpoolFull
from sidecar.audit.waiters import DurableWaiters
from sidecar.storage.client import RedisClient
from sidecar.storage.failures import REDIS_FAILURES

log = structlog.get_logger("sidecar.audit.writer")

BATCH = 256
_SEQ_TTL_S = 30 * 86400
_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0)
_RESTART_PAUSE_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_ADOPT_EVERY_S = 30.0
_RECENT = 64  # how many of the last documents' sizes the spool keeps room for one of
_LINE_OVERHEAD = 48  # a spool line's checksum, writer id, seq, separators

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


class AuditUnavailable(Exception):
    """A submitted document could not be made durable: its request must not be answered."""


def new_writer_id() -> str:
    """A fresh writer id: 16 hex characters, unique per process and stream."""
    return os.urandom(8).hex()


@dataclass
class WriterHooks:
    """Where the writer reports what happened, for the metrics."""

    written: Callable[[int], None] = lambda _n: None
    spooled: Callable[[int], None] = lambda _n: None
    replayed: Callable[[int], None] = lambda _n: None
    redis_error: Callable[[], None] = lambda: None
    depth: Callable[[int], None] = lambda _n: None
    spool_bytes: Callable[[int], None] = lambda _n: None
    restarted: Callable[[], None] = lambda: None


@dataclass
class DurableStreamWriter:
    """Appends documents to a Redis Stream off the request path; spools them while it cannot."""

    redis: RedisClient
    stream: str
    field_name: str
    spool: Spool
    integrity: IntegrityKeys | None = None
    writer_id: str = field(default_factory=new_writer_id)
    max_queue: int = 50_000
    hooks: WriterHooks = field(default_factory=WriterHooks)

    def __post_init__(self) -> None:
        self._seq = 0
        self._prev = ""  # the digest of the last document sealed
        self._durable = 0  # every seq up to this one is in Redis or fsync'd on disk
        self._queue: deque[SpooledRecord] = deque()
        self._queued_bytes = 0  # what the queue would take in the spool
        self._recent_sizes: deque[int] = deque(maxlen=_RECENT)
        self._wake = asyncio.Event()
        self._wait_s = 0.0  # the callers' `timeout_s`, for the expiry's message
        # Requests waiting for their document; past its deadline a wait is a 503 (or a cut).
        self._waiters = DurableWaiters(
            lambda: AuditUnavailable(f"no durable audit record within {self._wait_s:g} s")
        )
        self._idle = asyncio.Event()  # set while nothing waits in memory
        self._script = self.redis.register_script(_APPEND)
        # The hash tag puts the mark in the stream's slot, so the script is legal on a cluster.
        self._mark_prefix = f"{{{self.stream}}}:writer:"
        self._failures = 0
        # Records wait in memory that the spool refused: until they are written somewhere,
        # nothing new may be accepted (SPEC §7: a full spool means 503, not unaudited requests).
        self._stuck = False
        self.running = False  # the loop runs (False before start and while it restarts)
        self.last_append_ok: bool | None = None  # the outcome of the last call to Redis
        self._update_idle()
        self.hooks.spool_bytes(self.spool.size)

    def can_accept(self) -> bool:
        """Whether a new document is sure to be kept: room in memory, and on disk for what
        waits in memory plus one more document as large as the largest of late (SPEC §17: a
        request is forwarded only once its record can be kept)."""
        if self._stuck or len(self._queue) >= self.max_queue:
            return False
        return self.spool.has_room(self._queued_bytes + max(self._recent_sizes, default=0))

    def problem(self) -> str | None:
        """Why this writer is not fit to serve (for `/readyz`), or None."""
        if not self.running:
            return f"{self.stream}: writer not running (failed; restarting)"
        if self._stuck:
            return f"{self.stream}: spool full or failing: requests are refused"
        if self.last_append_ok is False:
            return f"{self.stream}: Redis refuses writes: records are spooled"
        return None

    def submit(self, document: bytes) -> int | None:
        """Seal and queue `document` (compact JSON) for writing; its sequence number, to wait on
        with `durable`, or None (nothing queued) when the memory queue is full."""
        if len(self._queue) >= self.max_queue:
            return None
        self._seq += 1
        sealed = seal(
            self.stream,
            document,
            writer=self.writer_id,
            seq=self._seq,
            prev=self._prev,
            keys=self.integrity,
        )
        self._prev = sealed.digest
        self._queue.append(SpooledRecord(self.writer_id, self._seq, sealed.document))
        size = len(sealed.document) + _LINE_OVERHEAD
        self._queued_bytes += size
        self._recent_sizes.append(size)
        self._idle.clear()
        self._wake.set()
        self.hooks.depth(len(self._queue))
        return self._seq

    async def durable(self, seq: int, timeout_s: float) -> None:
        """Return once document `seq` is in Redis or fsync'd in the spool; `AuditUnavailable`
        when it is stuck in memory (the spool refused it) or `timeout_s` passes first."""
        if seq <= self._durable:
            return
        if self._stuck:
            raise AuditUnavailable("the audit spool cannot take records")
        # One caller per writer, with one `timeout_s`: deadlines arrive in order, as the
        # waiters' single timer needs them to.
        self._wait_s = timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        await self._waiters.add(seq, deadline)

    @property
    def depth(self) -> int:
        """Documents waiting in memory."""
        return len(self._queue)

    async def run(self) -> None:
        """Write queued and spooled documents until cancelled; a failure restarts the loop."""
        restarts = 0
        while True:
            self.running = True
            try:
                await self._loop()
            except Exception:
                self.running = False
                self.hooks.restarted()
                log.exception("stream writer failed; restarting", stream=self.stream)
                await asyncio.sleep(_RESTART_PAUSE_S[min(restarts, len(_RESTART_PAUSE_S) - 1)])
                restarts += 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_adoption = float("-inf")  # at start-up first: spools of processes that are gone
        while True:
            if loop.time() >= next_adoption:
                if self.spool.adopt():
                    self.hooks.spool_bytes(self.spool.size)
                next_adoption = loop.time() + _ADOPT_EVERY_S
            if self.spool.empty and not self._queue:
                self._update_idle()
                self._wake.clear()
                # Wake for new documents, or in time to look for orphaned spools.
                try:
                    async with asyncio.timeout(_ADOPT_EVERY_S):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            if await self._step():
                self._failures = 0
            else:
                self.hooks.redis_error()
                await self._back_off(_BACKOFF_S[min(self._failures, len(_BACKOFF_S) - 1)])
                self._failures += 1

    async def _back_off(self, pause_s: float) -> None:
        """Wait `pause_s` before trying Redis again; records that arrive meanwhile go to the
        spool at once: their requests wait for a durable record, not for the backoff."""
        loop = asyncio.get_running_loop()
        until = loop.time() + pause_s
        while (left := until - loop.time()) > 0:
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                return
            self._spool_queue()

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
            self._forget(self._queue.popleft())
        self._mark_durable(last)
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
                self._waiters.fail(AuditUnavailable("the audit spool cannot take records"))
                break
            for _ in batch:
                self._forget(self._queue.popleft())
            self._mark_durable(batch[-1].seq)
            self.hooks.spooled(len(batch))
        self.hooks.depth(len(self._queue))
        self.hooks.spool_bytes(self.spool.size)
        self._update_idle()

    async def _append(self, batch: list[SpooledRecord]) -> None:
        by_writer: dict[str, list[SpooledRecord]] = {}
        for record in batch:
            by_writer.setdefault(record.writer_id, []).append(record)
        try:
            for writer_id, records in by_writer.items():
                args: list[str | bytes | int] = [self.field_name, _SEQ_TTL_S]
                for record in records:
                    args += [record.seq, record.document]
                await self._script(keys=[self.stream, self._mark_prefix + writer_id], args=args)
        except REDIS_FAILURES:
            self.last_append_ok = False
            raise
        self.last_append_ok = True

    def _forget(self, record: SpooledRecord) -> None:
        self._queued_bytes -= len(record.document) + _LINE_OVERHEAD

    def _mark_durable(self, seq: int) -> None:
        if seq > self._durable:
            self._durable = seq
            self._waiters.release(seq)

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
