"""Rotate a key through the admin API and keep its successor in a file only you can read.

    SIDECAR_ADMIN_KEY_FILE=admin.key python examples/rotate_key.py orders-service \\
        --url https://127.0.0.1:8444 --ca-file ca.pem --out orders-service.key --grace 24h

The admin key (scope `sidecar:keys`) is read from a file (`--admin-key-file`, or the environment
variable above), never from the command line, where `ps` would show it. The new key is written to
`--out`, created with mode 0600 and refused if it exists already, so a key is never written over
another nor left readable by others; the key is never printed. The old key keeps working for
`--grace` (the sidecar's default when left out), time to deploy the new one.

Exit codes: 0 rotated and written; 1 the API refused (its problem title and detail on stderr);
2 a usage error (an unreadable admin key file, an existing --out); 3 the admin API unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
TIMEOUT_S = 30.0


class Refused(Exception):
    """The admin API answered with an error; the message holds its status, title and detail
    (problem+json never echoes a key)."""


async def rotate(
    url: str,
    admin_key: str,
    name: str,
    *,
    grace: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """The successor of key `name`, from `POST /admin/v1/keys/{name}/rotate`. `Refused` when the
    API says no; `aiohttp.ClientError` (or `TimeoutError`) when it cannot be reached."""
    body = {} if grace is None else {"grace": grace}
    endpoint = f"{url.rstrip('/')}/admin/v1/keys/{quote(name, safe='')}/rotate"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            endpoint,
            json=body,
            headers={"Authorization": f"Bearer {admin_key}"},
            ssl=ssl_context if ssl_context is not None else True,
        ) as response,
    ):
        if response.status != 201:
            problem = await response.json(content_type=None)
            title = problem.get("title", "") if isinstance(problem, dict) else ""
            detail = problem.get("detail", "") if isinstance(problem, dict) else ""
            raise Refused(f"{response.status} {title}: {detail}".strip(": "))
        answer = await response.json()
        key = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(key, str):
            raise Refused(f"{response.status}: the answer holds no key")
        return key


def write_secret(path: Path, secret: str) -> None:
    """Create `path` with mode 0600 and write `secret` to it. O_EXCL: an existing file (or a
    symlink planted in its place) is refused, never written through; the mode is set at
    creation, so the key is never readable by others, not even for a moment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(secret + "\n")
        out.flush()
        os.fsync(out.fileno())


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the name of the key to rotate")
    parser.add_argument("--url", default="https://127.0.0.1:8444", help="the admin listener")
    parser.add_argument("--ca-file", type=Path, help="the CA that signed the sidecar's certificate")
    parser.add_argument("--admin-key-file", type=Path, help="a file holding the admin key")
    parser.add_argument("--out", type=Path, required=True, help="the new key's file (created)")
    parser.add_argument("--grace", help="how long the old key keeps working: 30m, 24h, 7d")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit code."""
    args = _arguments(argv)
    key_file = args.admin_key_file or os.environ.get("SIDECAR_ADMIN_KEY_FILE")
    if key_file is None:
        print(
            "rotate_key: --admin-key-file (or SIDECAR_ADMIN_KEY_FILE) is required", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        admin_key = Path(key_file).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"rotate_key: cannot read the admin key file ({type(exc).__name__})", file=sys.stderr)
        return EXIT_USAGE
    if args.out.exists() or args.out.is_symlink():
        # Checked before rotating: a rotation whose key could not be kept would be lost.
        print(f"rotate_key: {args.out} exists; choose a new file", file=sys.stderr)
        return EXIT_USAGE
    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    try:
        key = asyncio.run(
            rotate(args.url, admin_key, args.name, grace=args.grace, ssl_context=context)
        )
    except Refused as exc:
        print(f"rotate_key: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"rotate_key: admin API unreachable ({type(exc).__name__})", file=sys.stderr)
        return EXIT_UNREACHABLE
    write_secret(args.out, key)
    print(f"rotated {args.name}: the new key is in {args.out} (mode 0600)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
