"""Resident memory of a process, read from /proc/PID/status (VmRSS), sampled in a thread."""

from __future__ import annotations

import threading
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


class RssSampler:
    """`with RssSampler(pid) as s: …` then `s.max_mib`: the highest VmRSS seen meanwhile."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.max_mib: float = 0.0
        self.samples = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = rss_mib(self._pid)
            if value is not None:
                self.max_mib = max(self.max_mib, value)
                self.samples += 1
            self._stop.wait(_INTERVAL_S)

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
