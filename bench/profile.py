"""Optional: a py-spy profile of the sidecar under load, summarised by function.

py-spy is not a dependency: install it with `.venv/bin/pip install py-spy` to use
`--profile`. It attaches with ptrace, which needs root or CAP_SYS_PTRACE (in a container:
`--cap-add SYS_PTRACE`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "py-spy not found: `.venv/bin/pip install py-spy` to profile (--profile)"
_ENTRY_SHARE = 0.95
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SHORTEN = (
    re.compile(r"^.*/site-packages/"),
    re.compile(r"^.*/lib/python3\.\d+/"),
    re.compile(r"^.*/(?=sidecar/)"),
)


@dataclass(frozen=True, slots=True)
class FunctionCost:
    function: str
    samples: int
    share: float  # of all samples


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    samples: int  # of the main thread (the event loop)
    other_threads: int  # samples of other threads (the argon2 pool), left out
    own: list[FunctionCost]  # the function itself was on top of the stack
    inclusive: list[FunctionCost]  # the function was anywhere on the stack


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(py_spy: str, pid: int, output: Path, *, duration_s: int, native: bool) -> None:
    """Sample `pid` for `duration_s` at 100 Hz into a raw (collapsed stacks) file."""
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration_s),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    if native:
        argv.append("--native")
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if completed.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({completed.returncode}): {completed.stderr[-800:]}")


def _name(frame: str) -> str:
    """`handle (/…/sidecar/pipeline.py:120)` → `handle (sidecar/pipeline.py)`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    where = match.group("file")
    for pattern in _SHORTEN:
        where = pattern.sub("", where)
    return f"{match.group('func')} ({where})"


def summarise(raw: str, top: int = 15) -> ProfileSummary:
    """Own and inclusive sample counts per function from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = others = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        if frames[0].startswith("Thread._bootstrap"):
            # A pool thread: py-spy does not always see that one blocked in queue.get()
            # is idle, and the event loop's cost is the question here.
            others += count
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def ranked(counter: Counter[str]) -> list[FunctionCost]:
        return [
            FunctionCost(name, n, n / total if total else 0.0)
            for name, n in counter.most_common(top)
        ]

    # The entry chain (runpy, the CLI, the event loop's run) is on nearly every stack and
    # says nothing about where the time goes: left out of the inclusive ranking.
    entry = {name for name, n in inclusive.items() if n >= _ENTRY_SHARE * total}
    for name in entry:
        del inclusive[name]
    return ProfileSummary(
        samples=total, other_threads=others, own=ranked(own), inclusive=ranked(inclusive)
    )
