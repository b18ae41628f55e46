"""What a failed Redis call looks like, and the one way to carry on after one.

Redis errors and the socket errors beneath them (`OSError`) are one kind of failure to the
sidecar: the store is unreachable right now. Sites that turn it into another error catch
`REDIS_FAILURES`; sites that carry on without Redis use `tolerate_redis`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, OSError)


class RedisOutcome:
    """Whether the block under `tolerate_redis` failed, and with what."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Exception | None = None

    @property
    def failed(self) -> bool:
        """True when Redis failed and the rest of the block did not run."""
        return self.error is not None


@contextmanager
def tolerate_redis(on_error: Callable[[], object] | None = None) -> Iterator[RedisOutcome]:
    """Swallow a Redis failure inside the block, call `on_error` (the error counter), and
    say so through the yielded outcome; every other exception passes through."""
    outcome = RedisOutcome()
    try:
        yield outcome
    except REDIS_FAILURES as exc:
        outcome.error = exc
        if on_error is not None:
            on_error()
