"""Pure: the short negative cache of key ids Redis does not hold (bounded, TTL).

A repeated unknown id is answered without a Redis round trip. Ids are random (96 bits), so an
id becomes known only by being created; every creation is announced on the invalidation feed
and drops the entry (`drop`), and a (re)subscription clears them all (`clear`), since
announcements made while nobody listened are lost.

A look-up that raced an announcement must not store what it read before it: `generation`
moves on every `drop` and `clear`, and `note` stores only when it has not moved since the
look-up began.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class UnknownIds:
    """Ids found absent from Redis, each for `ttl_s` (0: none kept), at most `max_entries`
    (the oldest go first: a flood of distinct ids cannot grow it)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._found_at: OrderedDict[str, float] = OrderedDict()
        self.generation = 0

    def __contains__(self, key_id: object) -> bool:
        """True while `key_id` was found absent less than `ttl_s` ago."""
        if not isinstance(key_id, str):
            return False
        found_at = self._found_at.get(key_id)
        if found_at is None:
            return False
        if self._clock() - found_at < self._ttl:
            return True
        del self._found_at[key_id]
        return False

    def note(self, key_id: str, since: int) -> None:
        """Remember that Redis does not hold `key_id`, as read by a look-up that began at
        generation `since`; ignored when an announcement (or a resubscription) came since."""
        if self._ttl <= 0 or since != self.generation:
            return
        # Not moved to the end on a hit: an entry lives `ttl_s` from when Redis said so.
        self._found_at.pop(key_id, None)
        self._found_at[key_id] = self._clock()
        while len(self._found_at) > self._max:
            self._found_at.popitem(last=False)

    def drop(self, key_id: str) -> None:
        """`key_id` changed in the store (it may exist now): ask Redis on its next use."""
        self.generation += 1
        self._found_at.pop(key_id, None)

    def clear(self) -> None:
        """Forget every id: announcements may have been missed."""
        self.generation += 1
        self._found_at.clear()

    def __len__(self) -> int:
        return len(self._found_at)
