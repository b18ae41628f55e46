"""Small pieces the run's phases share: one checking request, a progress line, CPU and
metric deltas, waiting for a helper's file, a settled VmRSS, the flood's result."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
from pathlib import Path

from bench.model import Target
from bench.payloads import SCENARIOS
from bench.processes import Child
from bench.procfs import cpu_seconds, rss_mib
from bench.results import Measurement

_HELPER_DEADLINE_S = 120.0


class FloodResult:
    """The flood's JSON summary, readable once the flood process has stopped, plus the CPU
    the flood client itself used while the valid load ran (it competes for the same cores)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.client_cpu_s: float | None = None

    def read(self) -> dict[str, object] | None:
        try:
            loaded = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(loaded, dict):
            return None
        loaded["client_cpu_s"] = self.client_cpu_s
        return loaded


_STATUS_LABEL = re.compile(r'status="(\d+)"')


def requests_by_status(metrics: dict[str, float]) -> dict[str, float]:
    """`sidecar_requests_total` summed per status over routes."""
    counts: dict[str, float] = {}
    for name, value in metrics.items():
        match = _STATUS_LABEL.search(name)
        if name.startswith("sidecar_requests_total") and match:
            counts[match.group(1)] = counts.get(match.group(1), 0.0) + value
    return dict(sorted(counts.items()))


def check_target(target: Target, scenario: str, context: ssl.SSLContext, key: str) -> None:
    """One request of the scenario; raises with the answer unless it is a 200."""
    host_port = target.base.split("/")[2]
    connection: http.client.HTTPConnection
    if target.base.startswith("https:"):
        connection = http.client.HTTPSConnection(host_port, context=context, timeout=10)
    else:
        connection = http.client.HTTPConnection(host_port, timeout=10)
    request = SCENARIOS[scenario]
    headers = {"Content-Type": "application/json"} if request.body is not None else {}
    if target.keyed:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(request.method, request.path, body=request.body, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(
            f"{target.name} answered {response.status} to a valid {scenario} request: "
            f"{body[:500].decode(errors='replace')}"
        )


def print_measurement(measurement: Measurement) -> None:
    extra = ""
    if measurement.flood is not None:
        extra = f"  flood {measurement.flood.get('statuses')}"
    phase = f"light {measurement.round}" if measurement.light else f"round {measurement.round}"
    print(
        f"  {phase} {measurement.target:28} {measurement.scenario:4} "
        f"{measurement.wrk.requests_per_s:9,.0f} req/s  "
        f"p50 {measurement.wrk.p50_ms:7.2f} ms  p99 {measurement.wrk.p99_ms:7.2f} ms"
        f"  errors {measurement.wrk.errors}{extra}",
        flush=True,
    )


def cpu_delta(before: float | None, pid: int) -> float | None:
    after = cpu_seconds(pid)
    return None if before is None or after is None else after - before


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    if name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def wait_for_file(path: Path, child: Child) -> None:
    deadline = time.monotonic() + _HELPER_DEADLINE_S
    while not path.exists():
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not ready within {_HELPER_DEADLINE_S}s")
        time.sleep(0.05)


def settled_rss(pid: int) -> float:
    """The highest of a few VmRSS readings over a second (0 when the process is gone)."""
    readings = []
    for _ in range(5):
        readings.append(rss_mib(pid) or 0.0)
        time.sleep(0.2)
    return max(readings)
