"""The arguments of the commands that read the streams and the archive (`audit`, `events`,
`admin-events`, `archive`), apart from the commands themselves: parsing a command line must not
load psycopg and the archive's readers into a `serve` process (~10 MiB of every worker)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from sidecar.durations import describe

# SPEC §14: bounds on what the command line takes, so a typo is a usage error, not a
# traceback (an overflow) or a Redis error reported as Redis being unreachable.
MAX_SINCE = timedelta(days=3650)
MAX_COUNT = 100_000
_COUNT_HELP = f"how many of the most recent (1 to {MAX_COUNT}; default 20)"


def add_reading_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add `audit tail|query` and `events tail` to the command line."""
    audit = commands.add_parser("audit", parents=[common], help="read the audit trail")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_tail(actions, common, "the most recent records")
    query = actions.add_parser("query", parents=[common], help="filter records")
    query.add_argument(
        "--since",
        default="1h",
        help=f"a duration back from now (1h, 7d), at most {describe(MAX_SINCE)}; default 1h",
    )
    query.add_argument("--key-name")
    query.add_argument("--status", help="e.g. 4xx, 503")
    query.add_argument("--path", help="a route glob, e.g. /v1/orders/**")
    _add_verify(actions, common)
    events = commands.add_parser("events", parents=[common], help="authentication events")
    event_actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_tail(event_actions, common, "the most recent events")
    admin = commands.add_parser("admin-events", parents=[common], help="admin actions")
    admin_actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_tail(admin_actions, common, "the most recent ones")


def _add_tail(actions: Any, common: argparse.ArgumentParser, help_text: str) -> None:
    """`… tail [-n N] [--follow]`: the same for every stream."""
    tail = actions.add_parser("tail", parents=[common], help=help_text)
    tail.add_argument("-n", type=int, default=20, dest="count", help=_COUNT_HELP)
    tail.add_argument("--follow", action="store_true")


def _add_verify(actions: Any, common: argparse.ArgumentParser) -> None:
    """Add `audit verify` to the `audit` command's actions."""
    verify = actions.add_parser(
        "verify", parents=[common], help="check the streams' tamper evidence (exit 1 on findings)"
    )
    verify.add_argument(
        "--since",
        help="only the entries of a duration back from now by Redis's clock (1h, 7d), at most "
        f"{describe(MAX_SINCE)}; default: everything",
    )


def add_archive_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add `archive migrate|status` to the command line."""
    archive = commands.add_parser("archive", parents=[common], help="the PostgreSQL audit archive")
    actions = archive.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("migrate", parents=[common], help="create or update the archive's schema")
    actions.add_parser("status", parents=[common], help="lag, partitions, rows and bytes")
