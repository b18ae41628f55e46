"""`sidecar keys …`: issue, list, rotate, revoke and delete keys. A key is printed only by
`create` and `rotate`, once, and nowhere else."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import time
from typing import Any

from redis.exceptions import RedisError

from sidecar.config import SCOPE_SHAPE, Settings
from sidecar.durations import iso, parse_duration, parse_moment
from sidecar.errors import UsageError
from sidecar.keys import SecretHasher
from sidecar.keystore import KeyRecord, KeyStore, NewKey
from sidecar.redis_conn import create_redis, unreachable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    keys = commands.add_parser("keys", parents=[common], help="manage API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="issue a key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, dest="scopes")
    create.add_argument("--expires", help="ISO 8601 time or a duration such as 30d")
    create.add_argument("--service")
    create.add_argument("--allow-ip", action="append", default=[], metavar="CIDR")
    actions.add_parser("list", parents=[common], help="metadata and status of every key")
    rotate = actions.add_parser("rotate", parents=[common], help="issue a successor (shown once)")
    rotate.add_argument("name")
    rotate.add_argument("--grace", default="24h", help="how long the old key keeps working")
    for action in ("revoke", "delete"):
        actions.add_parser(action, parents=[common]).add_argument("name")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = create_redis(settings.redis)
    store = KeyStore(redis)
    try:
        if args.action == "create":
            return _show_new(args, await _create(args, settings, store), "created")
        if args.action == "rotate":
            grace = _value(parse_duration, args.grace, "--grace")
            new = await store.rotate(
                args.name,
                grace_s=grace.total_seconds(),
                prefix=settings.keys.prefix,
                hasher=SecretHasher(settings.keys.argon2),
            )
            return _show_new(args, new, f"rotated (the old key ends after {args.grace})")
        if args.action == "list":
            return _list(args, settings, await store.records())
        ids = await (store.revoke if args.action == "revoke" else store.delete)(args.name)
        _say(args, {"name": args.name, args.action + "d": ids}, f"{args.action}d {args.name}")
        return 0
    except (RedisError, OSError) as exc:
        raise unreachable(settings.redis.url, exc) from None
    finally:
        await redis.aclose()


async def _create(args: argparse.Namespace, settings: Settings, store: KeyStore) -> NewKey:
    if not _NAME.match(args.name):
        raise UsageError("--name: use 1-64 letters, digits, '.', '_' or '-'")
    for scope in args.scopes:
        if not SCOPE_SHAPE.match(scope):
            raise UsageError(f"--scope: {scope!r} is not resource:action, resource:* or *")
    for cidr in args.allow_ip:
        _value(lambda text: ipaddress.ip_network(text, strict=False), cidr, "--allow-ip")
    expires_at = None
    if args.expires is not None:
        expires_at = _value(parse_moment, args.expires, "--expires").timestamp()
        if expires_at <= time.time():
            raise UsageError("--expires: that time has passed")
    return await store.create(
        name=args.name,
        scopes=args.scopes,
        prefix=settings.keys.prefix,
        environment=settings.keys.environment,
        hasher=SecretHasher(settings.keys.argon2),
        expires_at=expires_at,
        service=args.service,
        allow_ips=args.allow_ip,
    )


def _value(parse: Any, text: str, option: str) -> Any:
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _show_new(args: argparse.Namespace, new: NewKey, verb: str) -> int:
    record = new.record
    if args.json:
        print(
            json.dumps(
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
        f"Key {record.name!r} {verb}: id {record.key_id}, scopes {' '.join(record.scopes)}, "
        f"environment {record.environment}, expires {iso(record.expires_at) or 'never'}."
    )
    print("This is the only time the key is shown. Store it in a secret manager now:\n")
    print(f"    {new.key}\n")
    return 0


def describe(record: KeyRecord, settings: Settings, now: float) -> dict[str, object]:
    """A key's metadata for `keys list`: never its hash, never the key."""
    return {
        "name": record.name,
        "id": record.key_id,
        "status": record.status(now),
        "scopes": list(record.scopes),
        "environment": record.environment,
        "service": record.service,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "last_used_at": iso(record.last_used_at),
        "rotated_from": record.rotated_from,
        "rotated_to": record.rotated_to,
        "rotation_due": record.rotation_due(now, settings.keys.max_age_days),
        "exposed": record.exposed,
        "allow_ips": list(record.allow_ips),
    }


def _list(args: argparse.Namespace, settings: Settings, records: list[KeyRecord]) -> int:
    now = time.time()
    rows = [describe(record, settings, now) for record in records]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no keys yet: sidecar keys create --name NAME --scope SCOPE")
        return 0
    columns = ("name", "id", "status", "scopes", "expires_at", "last_used_at", "flags")
    table = [
        [
            str(row["name"]),
            str(row["id"]),
            str(row["status"]),
            " ".join(row["scopes"]),  # type: ignore[arg-type]
            str(row["expires_at"] or "-"),
            str(row["last_used_at"] or "-"),
            ",".join(flag for flag in ("rotation_due", "exposed") if row[flag]) or "-",
        ]
        for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(columns)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(columns, widths, strict=True)))
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return 0


def _say(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    print(json.dumps(data) if args.json else text)
