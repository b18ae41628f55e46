"""The command line: parses arguments and calls into the package. Exit codes per SPEC §10:
0 success, 1 runtime failure, 2 usage or configuration error."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence

import structlog

from sidecar.audit.keyfiles import load_audit_keys
from sidecar.cli import keys as cli_keys
from sidecar.cli.reading_args import add_archive_parsers, add_reading_parsers
from sidecar.config import LoadedConfig, config_named, config_path, load_config
from sidecar.errors import ConfigError, SidecarError, UsageError
from sidecar.runtime.logs import configure_logging
from sidecar.runtime.tls import check_certificate, create_server_context

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """--config and --json, accepted before and after the command. The copies on the
    subcommands default to SUPPRESS so they cannot overwrite a value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS if suppress else None,
        help="YAML file (default: $SIDECAR_CONFIG or ./sidecar.yaml)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="machine-readable output",
    )
    return common


def _worker_count(text: str) -> int:
    """`--workers`: a count of at least 1, or `auto` for one per usable CPU."""
    if text == "auto":
        from sidecar.runtime.cpus import available_cpus

        return available_cpus()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None
    if count < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return count


def build_parser() -> argparse.ArgumentParser:
    """The `sidecar` argument parser, with every command and its options."""
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="API-key authentication sidecar.",
        parents=[_common_options(suppress=False)],
    )
    common = _common_options(suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", parents=[common], help="run the proxy")
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N|auto",
        help="N processes sharing the ports (SO_REUSEPORT), or `auto`: one per CPU this "
        "process may use (affinity and cgroup quota); default 1",
    )
    serve.add_argument(
        "--allow-python-parser",
        action="store_true",
        help="serve even without aiohttp's C HTTP parser (not recommended: the C one is the "
        "one hardened against request smuggling)",
    )
    commands.add_parser("check-config", parents=[common], help="validate the configuration")
    commands.add_parser("demo", parents=[common], help="run a self-contained demo")
    cli_keys.add_parsers(commands, common)
    add_reading_parsers(commands, common)
    add_archive_parsers(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: run the command `argv` names and return its exit code (SPEC §10)."""
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "check-config": _check_config,
        "demo": _demo,
        "keys": _keys,
        "audit": _streams,
        "events": _streams,
        "admin-events": _streams,
        "archive": _archive,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        _report_config(exc, as_json=args.json)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SidecarError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _report_config(exc: ConfigError, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": False, "problems": exc.problems}))
        return
    print("sidecar: invalid configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _load(args: argparse.Namespace, *, serving: bool = True) -> LoadedConfig:
    """Serving needs a complete file. Other commands run on defaults and the environment
    when no file exists, unless one was named explicitly."""
    named = config_named(args.config)
    return load_config(config_path(args.config), require_file=serving or named, complete=serving)


def _check_config(args: argparse.Namespace) -> int:
    loaded = _load(args)
    settings = loaded.settings
    for warning in loaded.warnings:  # stderr: --json output on stdout stays one document
        print(f"sidecar: warning: {warning}", file=sys.stderr)
    # The call `serve` makes: a key file one of them refuses, the other refuses too.
    for warning in load_audit_keys(settings).warnings:
        print(f"sidecar: warning: {warning}", file=sys.stderr)
    certificate = check_certificate(settings.tls)
    create_server_context(settings.tls)
    if args.json:
        print(json.dumps({"ok": True, "certificate_expires": certificate.not_after.isoformat()}))
    else:
        print(f"configuration OK; certificate valid until {certificate.not_after.isoformat()}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from sidecar.runtime.process import check_serving, run_serving
    from sidecar.runtime.workers import Supervisor

    loaded = _load(args)
    settings = loaded.settings
    certificate = check_serving(settings, allow_python_parser=args.allow_python_parser)
    configure_logging(settings.log.level, settings.log.format)
    for warning in loaded.warnings:  # once, by the process started (workers stay quiet)
        structlog.get_logger("sidecar.config").warning(warning)
    if args.workers > 1:
        supervisor = Supervisor(config_path(args.config), args.workers, args.allow_python_parser)
        return supervisor.run()
    run_serving(settings, certificate, config_path(args.config))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from sidecar.cli.demo import run_demo
    from sidecar.runtime.process import run_with_best_loop

    settings = _load(args, serving=False).settings
    configure_logging("info", "console")
    run_with_best_loop(run_demo(settings))
    return EXIT_OK


def _keys(args: argparse.Namespace) -> int:
    settings = _load(args, serving=False).settings
    return asyncio.run(cli_keys.run(args, settings))


def _archive(args: argparse.Namespace) -> int:
    from sidecar.cli import archive as cli_archive  # psycopg: loaded for this command only

    settings = _load(args, serving=False).settings
    # migrate logs what it does, as at a serving start-up: to stderr, never into the output.
    configure_logging(settings.log.level, settings.log.format)
    return asyncio.run(cli_archive.run(args, settings))


def _streams(args: argparse.Namespace) -> int:
    from sidecar.cli import audit as cli_audit  # psycopg: loaded for these commands only

    settings = _load(args, serving=False).settings
    try:
        return asyncio.run(cli_audit.run(args, settings))
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C ends --follow
