"""What the report says about the machine and the code a run measured."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import nginx
from bench.processes import REPO_ROOT


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _tool_version(argv: list[str]) -> str:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (completed.stdout + completed.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _source_revision() -> str:
    """The commit the measured code comes from, and whether sidecar/ differs from it."""
    git = ["git", "-C", str(REPO_ROOT)]
    commit = _tool_version([*git, "rev-parse", "--short", "HEAD"])
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "sidecar"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    return commit + (" with uncommitted changes in sidecar/" if dirty else "")


def machine_description(wrk_binary: str) -> dict[str, str]:
    """The figures that make two runs comparable: code revision, CPU, versions."""
    nginx_binary = nginx.find_nginx()
    return {
        "sidecar code": _source_revision(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "aiohttp": _package_version("aiohttp"),
        "uvloop": _package_version("uvloop"),
        "wrk": _tool_version([wrk_binary, "-v"]).split(" Copyright")[0],
        "nginx": _tool_version([nginx_binary, "-v"]) if nginx_binary else "not installed",
    }
