"""`sidecar keys …`: issue, list, rotate, revoke and delete keys. A key is printed only by
`create` and `rotate`, once, and nowhere else."""

from __future__ import annotations

import argparse
import getpass
import os
import time
from datetime import timedelta
from typing import Any

from sidecar.audit.admin_events import Actor, open_admin_events
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.cli.terminal import json_line, printable
from sidecar.config import Settings
from sidecar.durations import describe as describe_span
from sidecar.durations import iso, parse_duration, parse_moment
from sidecar.errors import SidecarError, Unavailable, UsageError
from sidecar.keys.format import check_name
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.lifecycle import InvalidKeyRequest, KeyLifecycle, check_key_request
from sidecar.keys.lifecycle import describe as describe_key
from sidecar.keys.records import KeyRecord
from sidecar.keys.store import KeyStore, NewKey
from sidecar.storage.client import create_redis, unreachable
from sidecar.storage.failures import REDIS_FAILURES

# SPEC §14: bounds on the times the command line takes, so a typo (99999999999d) is a usage
# error instead of an overflow, and no key is issued for centuries.
MAX_EXPIRES = timedelta(days=3650)
MAX_GRACE = timedelta(days=365)


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add `keys create|list|rotate|revoke|delete` to the command line."""
    keys = commands.add_parser("keys", parents=[common], help="manage API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="issue a key (shown once)")
    create.add_argument("--name", required=True, help=f"the key's name: {_NAME_HELP}")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        help="resource:action, resource:* or * (repeat for more)",
    )
    create.add_argument(
        "--expires",
        help="an ISO 8601 time or a duration such as 30d: later than now and at most "
        f"{describe_span(MAX_EXPIRES)} ahead (default: never)",
    )
    create.add_argument("--service", help=f"the service the key is for: {_NAME_HELP}")
    create.add_argument("--allow-ip", action="append", default=[], metavar="CIDR")
    actions.add_parser("list", parents=[common], help="metadata and status of every key")
    rotate = actions.add_parser("rotate", parents=[common], help="issue a successor (shown once)")
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace",
        default="24h",
        help="how long the old key keeps working, at most "
        f"{describe_span(MAX_GRACE)}; earlier keys of the name end no later than it, "
        "so 0 ends every earlier key at once (default: 24h)",
    )
    for action in ("revoke", "delete"):
        actions.add_parser(action, parents=[common]).add_argument("name")


_NAME_HELP = "1-64 letters, digits, '.', '_', ':' or '-'"


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `keys` action: every value checked before Redis is touched; exit status 0.
    Changes go through the `KeyLifecycle` the admin API uses, as actor `cli:<os user>`."""
    # Every value is checked before Redis is touched: a bad one is exit 2 and changes nothing.
    if args.action != "list":
        _value(check_name, args.name, "--name" if args.action == "create" else "NAME")
    if args.action == "create":
        expires_at = _check_create(args)
    if args.action == "rotate":
        grace = _value(_parse_grace, args.grace, "--grace")
    redis = create_redis(settings.redis)
    store = KeyStore(redis)
    try:
        if args.action == "list":
            return _list(args, settings, await store.records())
        async with open_admin_events(
            redis,
            settings,
            load_audit_keys(settings).integrity,
            durable_timeout_s=max(1.0, 10 * settings.redis.timeout_s),
        ) as admin_events:
            hasher = SecretHasher(settings.keys.argon2)
            lifecycle = KeyLifecycle(store, settings.keys, hasher, admin_events)
            return await _change(
                args,
                lifecycle,
                expires_at if args.action == "create" else None,
                grace if args.action == "rotate" else timedelta(0),
            )
    except REDIS_FAILURES as exc:
        raise unreachable(settings.redis.url, exc) from None
    except Unavailable as exc:  # the admin event could be kept neither in Redis nor on disk
        raise SidecarError(exc.detail) from None
    finally:
        await redis.aclose()


def cli_actor() -> Actor:
    """The operator at this terminal, as an admin event's actor: `cli:<os user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = str(os.getuid())
    return Actor(kind="cli", name=f"cli:{user}")


async def _change(
    args: argparse.Namespace,
    lifecycle: KeyLifecycle,
    expires_at: float | None,
    grace: timedelta,
) -> int:
    actor = cli_actor()
    if args.action == "create":
        new = await lifecycle.create(
            args.name,
            args.scopes,
            expires_at=expires_at,
            allow_ips=args.allow_ip,
            service=args.service,
            actor=actor,
        )
        return _show_new(args, new, "created")
    if args.action == "rotate":
        new = await lifecycle.rotate(args.name, grace_s=grace.total_seconds(), actor=actor)
        ends = "now" if not grace else f"after {args.grace.strip()}"
        return _show_new(args, new, f"rotated (earlier keys of it end {ends})")
    change = lifecycle.revoke if args.action == "revoke" else lifecycle.delete
    ids = await change(args.name, actor=actor)
    _say(args, {"name": args.name, args.action + "d": ids}, f"{args.action}d {args.name}")
    return 0


def _parse_grace(text: str) -> timedelta:
    return parse_duration(text, at_most=MAX_GRACE)


def _parse_expires(text: str) -> float:
    return parse_moment(text, at_most=MAX_EXPIRES).timestamp()


_OPTIONS = {
    "name": "--name",
    "scopes": "--scope",
    "service": "--service",
    "allow_ips": "--allow-ip",
}


def _check_create(args: argparse.Namespace) -> float | None:
    """The checks of `keys create`'s options (the lifecycle's, named as options); the key's
    end (Unix seconds) or None."""
    try:
        check_key_request(args.name, args.scopes, args.service, args.allow_ip)
    except InvalidKeyRequest as exc:
        raise UsageError(f"{_OPTIONS[exc.field]}: {printable(str(exc))}") from None
    if args.expires is None:
        return None
    expires_at: float = _value(_parse_expires, args.expires, "--expires")
    return expires_at


def _value(parse: Any, text: str, option: str) -> Any:
    try:
        return parse(text)
    except ValueError as exc:
        # One line, whatever the parser said (ipaddress quotes the value it was given).
        raise UsageError(f"{option}: {printable(str(exc))}") from None


def _show_new(args: argparse.Namespace, new: NewKey, verb: str) -> int:
    record = new.record
    if args.json:
        print(
            json_line(
                {
                    "name": record.name,
                    "id": record.key_id,
                    "key": new.key,
                    "scopes": list(record.scopes),
                    "environment": record.environment,
                    "expires_at": iso(record.expires_at),
                }
            )
        )
        return 0
    print(
        printable(
            f"Key {record.name!r} {verb}: id {record.key_id}, scopes {' '.join(record.scopes)}, "
            f"environment {record.environment}, expires {iso(record.expires_at) or 'never'}."
        )
    )
    print("This is the only time the key is shown. Store it in a secret manager now:\n")
    print(f"    {new.key}\n")
    return 0


def _list(args: argparse.Namespace, settings: Settings, records: list[KeyRecord]) -> int:
    now = time.time()
    rows = [describe_key(record, now, settings.keys.max_age_days) for record in records]
    if args.json:
        print(json_line(rows))
        return 0
    if not rows:
        print("no keys yet: sidecar keys create --name NAME --scope SCOPE")
        return 0
    columns = ("name", "id", "status", "scopes", "expires_at", "last_used_at", "flags")
    table = [
        [
            printable(cell)
            for cell in (
                str(row["name"]),
                str(row["id"]),
                str(row["status"]),
                " ".join(row["scopes"]),  # type: ignore[arg-type]
                str(row["expires_at"] or "-"),
                str(row["last_used_at"] or "-"),
                ",".join(flag for flag in ("rotation_due", "exposed") if row[flag]) or "-",
            )
        ]
        for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(columns)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(columns, widths, strict=True)))
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return 0


def _say(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    print(json_line(data) if args.json else printable(text))
