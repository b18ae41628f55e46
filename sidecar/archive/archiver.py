"""The archiver: a task in every serving process that copies the audit streams into the
archive, exactly once per record however many replicas run it (SPEC §15).

Each stream is read through the consumer group `sidecar-archiver`, this process being the
consumer named by its audit writer id. A pass over a stream:

1. takes the batch it holds from a pass that failed, else claims entries another consumer left
   pending longer than `archive.claim_idle_s` (its process died mid-batch), else reads new
   ones (`XREADGROUP >`, blocking briefly when there are none);
2. turns them into rows (`rows`); the poison among them, and rows the database refuses when
   the batch is retried row by row, are parked in the dead-letter stream with the reason;
3. inserts the rows in one transaction with their counters (`store`): what another replica
   inserted already conflicts and is skipped;
4. acknowledges the whole batch.

Until step 4 the entries stay pending in Redis: PostgreSQL down or slow means the pass fails,
the batch is kept and tried again after a pause (1, 2, 5, then every 10 s), and nothing else
changes. After a pass, at most every 10 s, the stream is trimmed to `archive.redis_window_s`
but never past its oldest unarchived entry (`window`), and `sidecar_archive_lag_seconds`
says how old that entry is. Hourly: partitions made ahead, expired days dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from sidecar.archive.database import ArchiveUnavailable, RowsRefused
from sidecar.archive.dead_letter import park
from sidecar.archive.rows import Entry, Poison, Row, TsSpan, extract_rows
from sidecar.archive.store import ArchiveStore
from sidecar.archive.tables import ArchivedStream, archived_streams
from sidecar.archive.window import GROUP, Position, ensure_group, forget_idle_consumers, position
from sidecar.audit.integrity import IntegrityKeys
from sidecar.config import Archive, Settings
from sidecar.metrics import Metrics
from sidecar.storage.client import RedisClient
from sidecar.storage.failures import REDIS_FAILURES

log = structlog.get_logger("sidecar.archive.archiver")

BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
TEND_EVERY_S = 1.0  # the lag is read at most this often …
TRIM_EVERY_S = 10.0  # … and the stream trimmed at most this often
MAINTAIN_EVERY_S = 3600.0
MAINTAIN_RETRY_S = 60.0
# After a part batch, before the next read: a batch costs mostly per statement (9% of a busy
# process's CPU with batches of a few records), and a record archived 0.25 s later costs nothing.
GATHER_S = 0.25
CLAIM_EVERY_S = 5.0  # idle entries are looked for at most this often (and as often as found)
FORGET_IDLE_MS = 3_600_000  # a consumer idle an hour with nothing pending is gone


@dataclass(frozen=True, slots=True)
class PassOutcome:
    """What one pass over a stream did with the entries it took."""

    taken: int = 0
    archived: int = 0
    duplicate: int = 0
    dead_letter: int = 0


@dataclass
class _Stream:
    """The archiver's state for one stream."""

    stream: ArchivedStream
    grouped: bool = False
    held: list[Entry] | None = None  # a batch read but not yet acknowledged
    claim_from: str = "0-0"
    next_claim: float = 0.0
    next_tend: float = 0.0
    next_trim: float = 0.0
    lag_s: float = 0.0
    failures: int = 0
    problem: str | None = None
    clock: tuple[int, float] | None = None  # Redis's ms at a monotonic time, from `tend`


class Archiver:
    """Copies the streams into the archive; `run` until cancelled. The steps are public so a
    test can drive them one at a time: `archive_pass`, `tend`, `maintain`."""

    def __init__(
        self,
        redis: RedisClient,
        store: ArchiveStore,
        streams: Sequence[ArchivedStream],
        *,
        consumer: str,
        settings: Archive,
        retention_days: int,
        integrity: IntegrityKeys | None,
        metrics: Metrics,
        block_ms: int = 1000,
    ) -> None:
        """`consumer`: this process's name in the group (its audit writer id). `block_ms`:
        how long a read waits for new entries, below the Redis client's socket timeout."""
        self._redis = redis
        self._store = store
        self._streams = {stream.stream: _Stream(stream) for stream in streams}
        self._consumer = consumer
        self._settings = settings
        self._retention_days = retention_days
        self._integrity = integrity
        self._metrics = metrics
        self._block_ms = block_ms

    async def close(self) -> None:
        """Close the archive's connection (after the task has stopped)."""
        await self._store.close()

    async def run(self) -> None:
        """Run until cancelled: one loop per stream, and the hourly upkeep."""
        loops = [self._keep_archiving(state) for state in self._streams.values()]
        await asyncio.gather(*loops, self._keep_maintained())

    async def problem(self) -> str | None:
        """None while archiving works; else how far behind it is and why, for `/readyz`."""
        troubled = [state.problem for state in self._streams.values() if state.problem]
        if not troubled:
            return None
        lag = max(state.lag_s for state in self._streams.values())
        return f"behind {lag:.0f} s: {troubled[0]}"

    async def archive_pass(self, stream: str, *, block_ms: int | None = None) -> PassOutcome:
        """One pass over `stream` (see the module's docstring). `ArchiveUnavailable` or a
        Redis failure when it could not finish: the batch is kept for the next pass."""
        state = self._streams[stream]
        if not state.grouped:
            state.grouped = await ensure_group(self._redis, stream, create=state.stream.create)
            if not state.grouped:
                return PassOutcome()  # its writer has not made the stream yet
        if state.held is None:
            state.held = await self._claim(state) or await self._read(state, block_ms)
        if not state.held:
            state.held = None
            return PassOutcome()
        outcome = await self._archive(state, state.held)
        state.held = None
        return outcome

    async def tend(self, stream: str, *, trim: bool = True) -> Position:
        """Read `stream`'s lag into the gauge and, with `trim`, trim it to the window."""
        state = self._streams[stream]
        window_ms = self._settings.redis_window_s * 1000 if trim else None
        found = await position(self._redis, stream, trim_to_ms=window_ms)
        state.clock = (found.now_ms, time.monotonic())
        state.lag_s = found.lag_s
        self._metrics.archive_lag.labels(stream).set(found.lag_s)
        if found.trimmed:
            log.debug("stream trimmed to the archive window", stream=stream, removed=found.trimmed)
        return found

    async def maintain(self) -> list[str]:
        """The hourly pass: partitions ahead, expired days dropped (chains checkpointed
        first), consumers of exited processes forgotten; the partitions dropped."""
        streams = [state.stream for state in self._streams.values()]
        dropped = await self._store.maintain(streams, self._retention_days, self._integrity)
        for state in self._streams.values():
            await forget_idle_consumers(self._redis, state.stream.stream, FORGET_IDLE_MS)
        return dropped

    async def _keep_archiving(self, state: _Stream) -> None:
        name = state.stream.stream
        while True:
            try:
                outcome = await self.archive_pass(name, block_ms=self._block_ms)
                await self._tend_when_due(state)
            except ArchiveUnavailable as exc:
                state.problem = str(exc)
            except REDIS_FAILURES as exc:
                state.problem = f"Redis unreachable ({type(exc).__name__})"
                if "NOGROUP" in str(exc):  # the stream was deleted: make it and the group anew
                    state.grouped = False
            except Exception as exc:  # a bug must not stop archiving for good: log, go on
                log.exception("archive pass failed", stream=name)
                state.problem = f"archive pass failed ({type(exc).__name__})"
            else:
                if state.problem is not None:
                    log.info("archiving again", stream=name)
                state.failures, state.problem = 0, None
                if 0 < outcome.taken < self._settings.batch:
                    await asyncio.sleep(GATHER_S)  # caught up: let the next batch fill
                if outcome.taken == 0 and not state.stream.create and not state.grouped:
                    await asyncio.sleep(TRIM_EVERY_S)  # a stream yet to exist: look now and then
                continue
            self._metrics.archive_errors.inc()
            pause = BACKOFF_S[min(state.failures, len(BACKOFF_S) - 1)]
            if state.failures == 0:
                log.warning("archiving paused", stream=name, reason=state.problem, retry_s=pause)
            state.failures += 1
            await self._tend_quietly(state)
            await asyncio.sleep(pause)  # a backoff: the entries wait in Redis meanwhile

    async def _keep_maintained(self) -> None:
        while True:
            try:
                await self.maintain()
                pause = MAINTAIN_EVERY_S
            except ArchiveUnavailable as exc:
                log.warning("archive upkeep postponed", reason=exc.reason)
                pause = MAINTAIN_RETRY_S
            except REDIS_FAILURES as exc:
                log.warning("archive upkeep postponed", reason=type(exc).__name__)
                pause = MAINTAIN_RETRY_S
            except Exception:
                log.exception("archive upkeep failed")
                pause = MAINTAIN_RETRY_S
            await asyncio.sleep(pause)

    async def _tend_when_due(self, state: _Stream) -> None:
        now = time.monotonic()
        if now < state.next_tend:
            return
        trim = now >= state.next_trim
        await self.tend(state.stream.stream, trim=trim)
        state.next_tend = now + TEND_EVERY_S
        if trim:
            state.next_trim = now + TRIM_EVERY_S

    async def _tend_quietly(self, state: _Stream) -> None:
        """The lag, while archiving fails: it is what shows the backlog growing."""
        with contextlib.suppress(*REDIS_FAILURES):  # Redis failed itself: readiness says so
            await self.tend(state.stream.stream, trim=False)

    async def _claim(self, state: _Stream) -> list[Entry]:
        if time.monotonic() < state.next_claim:
            return []
        result: Any = await self._redis.xautoclaim(
            state.stream.stream,
            GROUP,
            self._consumer,
            min_idle_time=round(self._settings.claim_idle_s * 1000),
            start_id=state.claim_from,
            count=self._settings.batch,
        )
        state.claim_from = _text(result[0])
        claimed: list[Entry] = list(result[1])
        if not claimed and state.claim_from == "0-0":  # the whole list was looked through
            state.next_claim = time.monotonic() + min(CLAIM_EVERY_S, self._settings.claim_idle_s)
        if claimed:
            log.info(
                "claimed entries a stopped reader left",
                stream=state.stream.stream,
                entries=len(claimed),
            )
        return claimed

    async def _read(self, state: _Stream, block_ms: int | None) -> list[Entry]:
        result: Any = await self._redis.xreadgroup(
            GROUP,
            self._consumer,
            {state.stream.stream: ">"},
            count=self._settings.batch,
            block=block_ms,
        )
        if not result:
            return []
        return list(result[0][1])

    async def _archive(self, state: _Stream, batch: list[Entry]) -> PassOutcome:
        stream = state.stream
        span = TsSpan.around(await self._redis_now(state), self._retention_days)
        rows, poison = extract_rows(batch, stream, span)
        inserted, refused = await self._insert(stream, rows)
        poison += refused
        await park(self._redis, stream, poison)
        await self._redis.xack(stream.stream, GROUP, *(entry_id for entry_id, _ in batch))
        for entry in poison:
            log.warning(
                "entry parked in the dead-letter stream",
                stream=stream.stream,
                entry=entry.entry_id,
                reason=entry.reason,
            )
        outcome = PassOutcome(
            taken=len(batch),
            archived=inserted,
            duplicate=len(rows) - len(refused) - inserted,
            dead_letter=len(poison),
        )
        records = self._metrics.archive_records
        for name in ("archived", "duplicate", "dead_letter"):
            if count := getattr(outcome, name):
                records.labels(stream.stream, name).inc(count)
        return outcome

    async def _insert(self, stream: ArchivedStream, rows: list[Row]) -> tuple[int, list[Poison]]:
        """How many of `rows` were inserted, and the rows refused: the batch at once, and
        when the database refuses it, row by row to find the ones it refuses."""
        try:
            return len((await self._store.insert(stream.table, rows)).entry_ids), []
        except RowsRefused:
            pass
        inserted, refused = 0, []
        for row in rows:
            try:
                inserted += len((await self._store.insert(stream.table, [row])).entry_ids)
            except RowsRefused as exc:
                reason = f"the database refused the row ({exc.reason})"
                refused.append(Poison(row.entry_id, row.document.encode("utf-8"), reason))
        return inserted, refused

    async def _redis_now(self, state: _Stream) -> datetime:
        """Redis's clock, as of the last position read, carried forward on this host's
        monotonic clock (a round trip per batch saved)."""
        if state.clock is None:
            await self.tend(state.stream.stream, trim=False)
        assert state.clock is not None
        redis_ms, at = state.clock
        return datetime.fromtimestamp(redis_ms / 1000 + (time.monotonic() - at), UTC)


def create_archiver(
    settings: Settings,
    redis: RedisClient,
    consumer: str,
    integrity: IntegrityKeys | None,
    metrics: Metrics,
) -> Archiver:
    """The archiver of a serving process (`archive.url` must be set) over every archived
    stream; `consumer` names it in the group (its audit writer's id: one per process)."""
    url = settings.archive.url
    if url is None:
        raise ValueError("archive.url is not set")
    return Archiver(
        redis,
        ArchiveStore(url, settings.archive.timeout_s),
        archived_streams(settings),
        consumer=consumer,
        settings=settings.archive,
        retention_days=settings.audit.retention_days,
        integrity=integrity,
        metrics=metrics,
        # A blocked read must come back before the client's socket timeout calls it dead.
        block_ms=max(1, min(1000, round(settings.redis.timeout_s * 500))),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
