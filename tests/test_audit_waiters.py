"""`DurableWaiters`: woken by seq, failed at their deadline by one shared timer."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.audit.waiters import DurableWaiters
from sidecar.audit.writer import AuditUnavailable


def _waiters() -> DurableWaiters:
    return DurableWaiters(lambda: AuditUnavailable("no durable audit record within 1 s"))


async def test_release_wakes_exactly_the_waiters_up_to_its_seq() -> None:
    waiters = _waiters()
    far = asyncio.get_running_loop().time() + 60
    first, second, third = (waiters.add(seq, far) for seq in (1, 2, 3))
    waiters.release(2)
    assert first.done()
    assert second.done()
    assert not third.done()
    waiters.release(3)
    assert third.result() is None


async def test_a_waiter_past_its_deadline_fails_and_later_ones_keep_waiting() -> None:
    waiters = _waiters()
    loop = asyncio.get_running_loop()
    soon = waiters.add(1, loop.time() + 0.05)
    later = waiters.add(2, loop.time() + 60)
    with pytest.raises(AuditUnavailable, match="within 1 s"):
        await asyncio.wait_for(soon, 5)
    assert not later.done()  # the timer re-armed for it, it did not fire it early
    waiters.release(2)
    assert later.result() is None


async def test_each_expired_waiter_fails_once_the_timer_reaches_it() -> None:
    waiters = _waiters()
    loop = asyncio.get_running_loop()
    start = loop.time()
    futures = [waiters.add(seq, start + 0.02 * seq) for seq in range(1, 4)]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
    assert all(isinstance(result, AuditUnavailable) for result in results)
    assert loop.time() >= start + 0.06  # the last one no sooner than its own deadline


async def test_a_cancelled_waiter_is_skipped_by_release_and_by_the_timer() -> None:
    waiters = _waiters()
    loop = asyncio.get_running_loop()
    gone = waiters.add(1, loop.time() + 0.02)
    kept = waiters.add(2, loop.time() + 0.04)
    gone.cancel()  # its request went away
    with pytest.raises(AuditUnavailable):
        await asyncio.wait_for(kept, 5)
    waiters.release(2)  # nothing left to wake; must not raise on the cancelled one
    assert gone.cancelled()


async def test_fail_answers_every_waiter_with_the_error() -> None:
    waiters = _waiters()
    far = asyncio.get_running_loop().time() + 60
    futures = [waiters.add(seq, far) for seq in (1, 2)]
    waiters.fail(AuditUnavailable("the audit spool cannot take records"))
    for future in futures:
        with pytest.raises(AuditUnavailable, match="spool"):
            future.result()
