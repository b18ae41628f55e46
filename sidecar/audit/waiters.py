"""Requests waiting for their audit document to be durable (SPEC §17), by sequence number.

A heap by seq: when the writer marks everything up to N durable, exactly the waiters of seqs
up to N are woken, each once, instead of every waiter on every batch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class DurableWaiters:
    """Futures keyed by the seq they wait for; `release(n)` resolves those up to n."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tickets = itertools.count()  # ties broken by arrival: futures do not compare

    def add(self, seq: int) -> asyncio.Future[None]:
        """A future resolved once document `seq` is durable (or failed with `fail`)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (seq, next(self._tickets), waiter))
        return waiter

    def release(self, seq: int) -> None:
        """Every document up to `seq` is durable: wake their waiters."""
        heap = self._heap
        while heap and heap[0][0] <= seq:
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():  # a waiter that timed out or was cancelled is done
                waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        """No waiting document can be kept: every waiter gets `error`."""
        heap, self._heap = self._heap, []
        for _seq, _ticket, waiter in heap:
            if not waiter.done():
                waiter.set_exception(error)
