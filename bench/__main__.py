"""`python -m bench` (`make bench`): the side-by-side benchmark. See bench/README.md."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType

from bench import results
from bench.payloads import SCENARIOS
from bench.run import Options, run
from bench.sidecar_target import baseline_python, revision_of
from bench.wrk import WrkMissing, find_wrk

EXIT_OK, EXIT_FAILURE, EXIT_MISSING_TOOL = 0, 1, 2
TARGET_NAMES = (
    results.DIRECT,
    results.NAIVE,
    results.LEAN,
    results.SIDECAR,
    results.SIDECAR_INFO,
    results.SIDECAR_WORKERS,
    results.SIDECAR_ARCHIVE,
    results.SIDECAR_BASELINE,
    results.NGINX,
    results.FLOOD_SINGLE,
    results.FLOOD_MANY,
)
# Short names for the targets whose names need quoting on a command line.
TARGET_ALIASES = {
    "info": (results.SIDECAR_INFO,),
    "workers": (results.SIDECAR_WORKERS,),
    "archive": (results.SIDECAR_ARCHIVE,),
    "baseline": (results.SIDECAR_BASELINE,),
    "flood": (results.FLOOD_SINGLE, results.FLOOD_MANY),
    "flood1": (results.FLOOD_SINGLE,),
    "flood1000": (results.FLOOD_MANY,),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="sidecar vs direct, a naive aiohttp proxy and nginx, side by side.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--idle-connections", type=int, default=2000, help="idle TLS connections for the RSS check"
    )
    parser.add_argument("--flood-rate", type=float, default=200.0, help="invalid keys per second")
    parser.add_argument(
        "--slowloris",
        type=int,
        default=500,
        help="slowloris connections held during one run on sidecar (0 skips)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy profile of the sidecar (needs py-spy)"
    )
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument(
        "--profile-target",
        default="sidecar",
        help='the sidecar target --profile samples (default "sidecar"; e.g. "sidecar (archive)")',
    )
    parser.add_argument(
        "--profile-native", action="store_true", help="include C frames (py-spy --native)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run: 2 s rounds, 1 round"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another revision (with its .venv, from `make install`): its "
        "sidecar runs beside this one as `sidecar (baseline)`",
    )
    parser.add_argument(
        "--step",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a checkout of an earlier revision (with its .venv), measured as `sidecar @REV`; "
        "repeat, oldest first: the report gives each step's ratio over the one before",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}; the first is the main one "
        "(floods, slowloris, archive, profile). Default: all",
    )
    parser.add_argument(
        "--light-connections",
        type=int,
        default=2,
        help="connections of the light-load phase (wrk -t1) on direct, naive, lean, sidecar "
        "(0 skips it)",
    )
    parser.add_argument(
        "--targets",
        help="comma-separated target names (or: "
        + ", ".join(TARGET_ALIASES)
        + "); only these are started and measured. Default: all",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    return parser


def _options(args: argparse.Namespace, argv: list[str]) -> Options:
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.threads < 1:
        raise SystemExit("--rounds, --duration, --connections and --threads must be ≥ 1")
    if args.slowloris < 0:
        raise SystemExit("--slowloris must be ≥ 0")
    for checkout in [args.baseline, *args.step]:
        if checkout is not None and not baseline_python(checkout).exists():
            raise SystemExit(f"{checkout}: {baseline_python(checkout)} not found (make install)")
    if args.light_connections < 0:
        raise SystemExit("--light-connections must be ≥ 0")
    scenarios = tuple(name.strip() for name in args.scenarios.split(",") if name.strip())
    if not scenarios or any(name not in SCENARIOS for name in scenarios):
        raise SystemExit(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    quick = args.quick
    return Options(
        duration_s=2.0 if quick else args.duration,
        rounds=1 if quick else args.rounds,
        warmup_s=1.0 if quick else args.warmup,
        connections=args.connections,
        threads=args.threads,
        out=args.out,
        profile=args.profile,
        profile_s=3 if quick else args.profile_seconds,
        profile_native=args.profile_native,
        idle_connections=min(args.idle_connections, 200) if quick else args.idle_connections,
        flood_rate=args.flood_rate,
        slowloris=args.slowloris,
        baseline=None if args.baseline is None else args.baseline.resolve(),
        steps=tuple((f"sidecar @{revision_of(step)}", step.resolve()) for step in args.step),
        profile_target=args.profile_target,
        command=shlex.join(["python", "-m", "bench", *argv]),
        scenarios=tuple(dict.fromkeys(scenarios)),
        light_connections=args.light_connections,
        targets=None if args.targets is None else parse_targets(args.targets),
    )


def parse_targets(text: str) -> frozenset[str]:
    """`--targets`: exact target names or aliases, comma-separated."""
    chosen: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if item in TARGET_ALIASES:
            chosen.update(TARGET_ALIASES[item])
        elif item in TARGET_NAMES:
            chosen.add(item)
        elif item:
            raise SystemExit(
                f"--targets: unknown {item!r}; names: {', '.join(TARGET_NAMES)}; "
                f"aliases: {', '.join(TARGET_ALIASES)}"
            )
    if not chosen:
        raise SystemExit("--targets: name at least one target")
    return frozenset(chosen)


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`, which stops the children


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    options = _options(build_parser().parse_args(arguments), arguments)
    try:
        find_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        run(options)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return EXIT_FAILURE
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
