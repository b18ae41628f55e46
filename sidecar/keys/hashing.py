"""argon2id: the configured hasher, and the bounded thread pool that runs it off the loop
within its budget of CPU time (`keys.budget`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sidecar.config import Argon2
from sidecar.errors import Unavailable
from sidecar.keys.budget import Argon2Budget, BudgetSpent


class SecretHasher:
    """argon2id with the configured parameters."""

    def __init__(self, params: Argon2) -> None:
        self.parallelism = params.parallelism
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    def hash(self, secret: str) -> str:
        """A new salted argon2id hash of `secret`."""
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str, secret: str) -> bool:
        """True when `secret` matches; False for a mismatch or an unusable stored hash."""
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when `stored_hash` was made with other parameters than the configured ones."""
        return self._hasher.check_needs_rehash(stored_hash)

    def timed_verify(self, stored_hash: str, secret: str) -> tuple[bool, float]:
        """`verify`, and the CPU-seconds it took. Run on the thread that verifies: with one
        lane that thread's CPU time is exact (a busy machine does not inflate it); with more,
        argon2 runs its own threads, and the wall time of each lane is charged."""
        if self.parallelism == 1:
            started = time.thread_time()
            return self.verify(stored_hash, secret), time.thread_time() - started
        started = time.perf_counter()
        verified = self.verify(stored_hash, secret)
        return verified, (time.perf_counter() - started) * self.parallelism


class Argon2Pool:
    """A `SecretHasher` on a few threads. At most `workers` verifications run at once and
    at most `queue` wait: beyond that a flood is answered with 503s, not with latency. With a
    `budget`, a verification it does not admit is refused with a 503 too, never run."""

    def __init__(
        self,
        hasher: SecretHasher,
        *,
        workers: int = 2,
        queue: int = 64,
        on_verify: Callable[[], None] = lambda: None,
        budget: Argon2Budget | None = None,
    ) -> None:
        self.hasher = hasher
        self.budget = budget
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(workers)
        self._queue_limit = queue
        self._waiting = 0
        self._on_verify = on_verify

    async def verify(self, stored_hash: str, secret: str, *, reserve: bool = False) -> bool:
        """`SecretHasher.verify` off the event loop; `Unavailable` when the queue is full,
        `BudgetSpent` when the budget (down to its reserve, for a `reserve` caller) is."""
        if self._waiting >= self._queue_limit:
            raise Unavailable("too many key verifications in progress", retry_after=1)
        charged = 0.0
        if self.budget is not None:
            admitted = self.budget.take(reserve=reserve)
            if admitted is None:
                raise BudgetSpent("key verifications are over their CPU budget", retry_after=1)
            charged = admitted
        measured = charged  # what stays charged if the verification never runs to its end
        self._waiting += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                self._on_verify()
                verified, measured = await loop.run_in_executor(
                    self._executor, self.hasher.timed_verify, stored_hash, secret
                )
                return verified
        finally:
            self._waiting -= 1
            if self.budget is not None:
                self.budget.settle(charged, measured)

    async def hash(self, secret: str) -> str:
        """`SecretHasher.hash` off the event loop (a rehash: not counted against the queue)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.hasher.hash, secret)

    def close(self) -> None:
        """Stop the threads; verifications not yet started are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)
