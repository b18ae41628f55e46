from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.runtime.cpus import available_cpus

ALL = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", ALL),
        ("50000 100000\n", 1),  # half a CPU still needs one thread
        ("100000 100000\n", 1),
        ("150000 100000\n", min(ALL, 2)),
        ("garbage\n", ALL),
        (None, ALL),  # no cgroup v2 file
    ],
)
def test_the_cgroup_quota_caps_the_count(
    tmp_path: Path, cpu_max: str | None, expected: int
) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert available_cpus(path) == expected
