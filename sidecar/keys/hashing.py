"""argon2id: the configured hasher, and the bounded thread pool that runs it off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sidecar.config import Argon2
from sidecar.errors import Unavailable


class SecretHasher:
    """argon2id with the configured parameters."""

    def __init__(self, params: Argon2) -> None:
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


class Argon2Pool:
    """A `SecretHasher` on a few threads. At most `workers` verifications run at once and
    at most `queue` wait: beyond that a flood is answered with 503s, not with latency."""

    def __init__(
        self,
        hasher: SecretHasher,
        *,
        workers: int = 2,
        queue: int = 64,
        on_verify: Callable[[], None] = lambda: None,
    ) -> None:
        self.hasher = hasher
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(workers)
        self._queue_limit = queue
        self._waiting = 0
        self._on_verify = on_verify

    async def verify(self, stored_hash: str, secret: str) -> bool:
        """`SecretHasher.verify` off the event loop; `Unavailable` when the queue is full."""
        if self._waiting >= self._queue_limit:
            raise Unavailable("too many key verifications in progress", retry_after=1)
        self._waiting += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                self._on_verify()
                return await loop.run_in_executor(
                    self._executor, self.hasher.verify, stored_hash, secret
                )
        finally:
            self._waiting -= 1

    async def hash(self, secret: str) -> str:
        """`SecretHasher.hash` off the event loop (a rehash: not counted against the queue)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.hasher.hash, secret)

    def close(self) -> None:
        """Stop the threads; verifications not yet started are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)
