"""How many CPUs this process may really use: the scheduler affinity, capped by a cgroup v2
CPU quota. In a container `os.cpu_count()` is the node's count, and sizing the argon2 pool
from it would let a key-guessing flood hold ~19 MiB per verification on every node core."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = _CPU_MAX) -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup v2 quota; at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return count
    if quota == "max":
        return count
    try:
        limit = math.ceil(int(quota) / int(period))
    except (ValueError, ZeroDivisionError):
        return count
    return max(1, min(count, limit))


class _WorkerShare:
    """How many worker processes share this machine's CPUs: set once by a `--workers N`
    worker at start-up, before anything is sized from `cpus_per_worker`."""

    workers = 1


def share_cpus_among(workers: int) -> None:
    """This process is one of `workers` serving processes on the same CPUs."""
    _WorkerShare.workers = max(1, workers)


def cpus_per_worker() -> float:
    """This process's share of the usable CPUs: what per-process budgets are sized from, so
    N workers together stay within what one process would take."""
    return available_cpus() / _WorkerShare.workers
