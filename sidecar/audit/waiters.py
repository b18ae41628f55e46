"""Requests waiting for their audit document to be durable (SPEC §17), by sequence number.

A heap by seq: when the writer marks everything up to N durable, exactly the waiters of seqs
up to N are woken, each once, instead of every waiter on every batch.

Each waiter also has a deadline. One timer serves them all: every waiter gets the same wait
(`audit` settings), so deadlines come in the order waiters are added, and the timer only
ever needs the oldest one still waiting. A timeout per request (`asyncio.timeout`) cost a
timer handle made and cancelled for every record, ~3 µs each.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable


class DurableWaiters:
    """Futures keyed by the seq they wait for; `release(n)` resolves those up to n, and one
    still waiting at its deadline gets the exception `expired()` makes."""

    def __init__(self, expired: Callable[[], BaseException]) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tickets = itertools.count()  # ties broken by arrival: futures do not compare
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._expired = expired
        self._timer: asyncio.TimerHandle | None = None

    def add(self, seq: int, deadline: float) -> asyncio.Future[None]:
        """A future resolved once document `seq` is durable, failed with `fail`'s error, or
        with `expired()` at `deadline` (the running loop's clock) if neither came first.
        Deadlines must not decrease from one call to the next."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (seq, next(self._tickets), waiter))
        self._deadlines.append((deadline, waiter))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        return waiter

    def release(self, seq: int) -> None:
        """Every document up to `seq` is durable: wake their waiters."""
        heap = self._heap
        while heap and heap[0][0] <= seq:
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():  # a waiter that timed out or was cancelled is done
                waiter.set_result(None)
        self._forget_done()

    def fail(self, error: BaseException) -> None:
        """No waiting document can be kept: every waiter gets `error`."""
        heap, self._heap = self._heap, []
        for _seq, _ticket, waiter in heap:
            if not waiter.done():
                waiter.set_exception(error)
        self._forget_done()

    def _forget_done(self) -> None:
        """Drop the oldest deadlines of waiters already answered: the queue stays as long
        as the waits still open, not as long as every wait of the last `timeout_s`."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()

    def _expire(self) -> None:
        """The timer: fail every waiter past its deadline, then wait for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _deadline, waiter = deadlines.popleft()
            if not waiter.done():
                waiter.set_exception(self._expired())
        if deadlines:
            self._timer = loop.call_at(deadlines[0][0], self._expire)
