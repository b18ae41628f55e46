"""What /proc says about a target: resident memory (VmRSS, sampled in a thread) and CPU time.

CPU time is the steadier figure on a shared machine: a target's CPU seconds per request
hardly change when a neighbour steals cycles, while its requests per second do.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType

_INTERVAL_S = 0.2


def rss_mib(pid: int) -> float | None:
    """VmRSS of `pid` in MiB, or None when the process is gone (or /proc has no such line)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        return None
    return None


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces, hence the last ')'):
    # state ppid … utime(14) stime(15), numbered from 1 over the whole line.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (all its threads) and its direct children (nginx's
    worker under its master); None when the process is gone."""
    own = _own_cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(_own_cpu_seconds(child) or 0.0 for child in _children(pid))


class RssSampler:
    """`with RssSampler(pid) as s: …` then `s.max_mib`: the highest VmRSS seen meanwhile,
    of `pid` or of any of its children (`serve --workers N`: the worst worker)."""

    def __init__(self, pid: int) -> None:
        self._pids = [pid, *_children(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.max_mib: float = 0.0
        self.samples = 0
        self.series: list[tuple[float, float]] = []  # (time.monotonic(), worst VmRSS MiB)

    def _sample(self) -> None:
        while not self._stop.is_set():
            worst = None
            for pid in self._pids:
                value = rss_mib(pid)
                if value is not None:
                    self.max_mib = max(self.max_mib, value)
                    self.samples += 1
                    worst = value if worst is None else max(worst, value)
            if worst is not None:
                self.series.append((time.monotonic(), worst))
            self._stop.wait(_INTERVAL_S)

    def max_between(self, start: float, end: float) -> float | None:
        """The highest sample taken within [start, end) (time.monotonic() values)."""
        values = [mib for at, mib in self.series if start <= at < end]
        return max(values) if values else None

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
