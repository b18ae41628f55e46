"""The run's options and the things it starts: targets, sidecar processes, listeners."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.payloads import SCENARIOS
from bench.processes import Child
from bench.results import SIDECAR
from bench.sidecar_target import SidecarPorts


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    rounds: int
    warmup_s: float
    connections: int
    threads: int
    out: Path
    profile: bool
    profile_s: int
    profile_native: bool
    idle_connections: int
    flood_rate: float
    command: str
    slowloris: int = 500  # slowloris connections held during one valid run; 0 skips
    # A checkout of another revision with its own .venv: its sidecar is measured beside this
    # one, same config, same rounds, so "did this change cost anything" is one ratio.
    baseline: Path | None = None
    profile_target: str = SIDECAR  # which sidecar target `--profile` samples
    scenarios: tuple[str, ...] = tuple(SCENARIOS)  # the first is the main one (Results)
    light_connections: int = 2  # the light-load phase's wrk -c (one thread); 0 skips it
    targets: frozenset[str] | None = None  # only these targets (None: all)
    # `--step DIR`: earlier revisions, oldest first, each measured beside this tree as
    # `sidecar @<rev>`: the report gives each step's ratio over the one before it.
    steps: tuple[tuple[str, Path], ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    base: str  # scheme://host:port; the scenario gives the path
    keyed: bool  # whether its requests carry the API key
    pid: int  # the process doing the target's work: its CPU time is measured
    sidecar: SidecarProcess | None = None  # the process behind it, when it is a sidecar
    flood: str | None = None  # "single" | "many": the flood running beside the valid load


@dataclass(frozen=True, slots=True)
class SidecarProcess:
    child: Child
    ports: SidecarPorts


@dataclass(frozen=True, slots=True)
class Listening:
    child: Child
    port: int
