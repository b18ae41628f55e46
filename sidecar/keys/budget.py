"""Pure: the budget of argon2 time, a token bucket of CPU-seconds.

Unknown ids never reach argon2, so what spends this budget is a known id with a secret to
check: a valid key's first use (or first after its cache entry went), and wrong secrets. The
bucket refills at `rate` CPU-seconds per second (`keys.argon2.max_cpu_share` of the usable
CPUs) up to one second's worth; a verification is admitted while it holds more than nothing,
and charged what it measured once it ran. When it is spent, verifications are refused (a
503), never queued: a flood of wrong secrets then costs at most its share, whatever its rate.

The reserve: a verification whose client address has no failed attempt in its window (a
valid key's first use, typically) may take the bucket `reserve_s` below zero. A flood keeps
the bucket near zero and so never reaches the reserve once each of its addresses has failed
once; the reserve refills from the same rate, so the long-run share stays `rate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sidecar.config import Argon2
from sidecar.errors import Unavailable

_FIRST_ESTIMATE_S = 0.05  # the default parameters' cost on a current core, before any is measured


class BudgetSpent(Unavailable):
    """503: argon2 has used its share of the CPU; the verification was not run."""


class Argon2Budget:
    """A token bucket of argon2 CPU-seconds; see the module's docstring."""

    def __init__(
        self,
        rate: float,
        *,
        reserve_s: float = 0.0,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._capacity = rate * burst_s
        self._reserve = reserve_s
        self._clock = clock
        self._tokens = self._capacity
        self._at = clock()
        # Charged when a verification is admitted and corrected when it lands: concurrent
        # admissions see each other's cost before any has finished.
        self.estimate_s = _FIRST_ESTIMATE_S

    @classmethod
    def for_cpus(cls, cpus: float, params: Argon2) -> Argon2Budget:
        """`keys.argon2.max_cpu_share` of `cpus` usable CPUs (this process's share of them
        under `--workers N`), with its `reserve_s`."""
        return cls(cpus * params.max_cpu_share, reserve_s=params.reserve_s)

    @property
    def tokens(self) -> float:
        """The CPU-seconds left now (negative: in the reserve, or owed)."""
        self._refill()
        return self._tokens

    def take(self, *, reserve: bool) -> float | None:
        """Admit one verification and charge its estimate (returned, for `settle`); None
        when the budget is spent (for a `reserve` caller: spent down to the reserve)."""
        floor = -self._reserve if reserve else 0.0
        if self.tokens <= floor:
            return None
        charged = self.estimate_s
        self._tokens -= charged
        return charged

    def settle(self, charged: float, measured_s: float) -> None:
        """Replace the estimate charged by `take` with what the verification measured."""
        self._tokens += charged - measured_s
        self.estimate_s = 0.8 * self.estimate_s + 0.2 * measured_s

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
