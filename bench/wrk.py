"""Driving `wrk` and reading what it prints.

Every request of a run is the same (a Lua script sets method, body and headers: a POST of
1 KiB JSON or a small GET, `bench.payloads.SCENARIOS`); `--latency` adds the percentile table
the p50/p99 come from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import SCENARIOS, Scenario
from bench.private import write_private

_TIMEOUT_S = 10  # wrk's default (2 s) would drop slow requests from the percentiles
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_REQS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkMissing(RuntimeError):
    """wrk is not installed."""


class WrkOutputError(RuntimeError):
    """wrk ran but printed something this parser does not understand."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is required: install it with `apt-get install wrk`")
    return path


def to_ms(value: str, unit: str) -> float:
    """wrk's time figures ("812.00us", "1.20ms", "2.01s") in milliseconds."""
    return float(value) * _UNITS_MS[unit]


def write_script(
    path: Path, authorization: str | None, scenario: Scenario = SCENARIOS["post"]
) -> Path:
    """A Lua script making every request the scenario's (plus the key, if given).

    Mode 0600: the script holds the API key, and lives only in the run's temporary folder.
    """
    lines = [f'wrk.method = "{scenario.method}"']
    if scenario.body is not None:
        lines += [
            f"wrk.body = [==[{scenario.body.decode()}]==]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    if authorization is not None:
        lines.append(f'wrk.headers["Authorization"] = "{authorization}"')
    return write_private(path, "\n".join(lines) + "\n")


def parse(output: str) -> WrkResult:
    """Requests/s, p50, p99 (ms), totals and error counts from `wrk --latency` output."""
    reqs = _REQS.search(output)
    percentiles = {m.group(1): to_ms(m.group(2), m.group(3)) for m in _PERCENTILE.finditer(output)}
    total = _TOTAL.search(output)
    if reqs is None or "50" not in percentiles or "99" not in percentiles or total is None:
        raise WrkOutputError(f"cannot read wrk output:\n{output[-1500:]}")
    non_2xx = _NON_2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests_per_s=float(reqs.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    )


def run(
    wrk: str,
    url: str,
    script: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int,
) -> WrkResult:
    """One wrk run; raises when wrk fails or its output cannot be read."""
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    if completed.returncode != 0:
        raise WrkOutputError(f"wrk exited {completed.returncode}: {completed.stderr[-1500:]}")
    return parse(completed.stdout)
