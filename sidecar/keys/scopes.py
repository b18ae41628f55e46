"""Pure: the reserved `sidecar:` scopes that make a key an admin key (SPEC §16).

An admin key and a proxy key never stand in for each other: the proxy port refuses any key
holding a `sidecar:` scope, the admin port any key holding none. Keeping the two apart means a
leaked upstream key cannot manage keys, and an admin key never travels to the upstream.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.keys.format import shown

ADMIN_PREFIX = "sidecar:"
READ = "sidecar:read"  # keys, activity, events, audit metadata
KEYS = "sidecar:keys"  # create, rotate, revoke, delete
AUDIT = "sidecar:audit"  # decrypted audit bodies
# Each grants only itself: `sidecar:keys` does not imply `sidecar:read`, so a key that may
# only rotate cannot also read the audit trail.
ADMIN_SCOPES = (READ, KEYS, AUDIT)


def is_admin(scopes: Iterable[str]) -> bool:
    """True when any scope is reserved (starts with `sidecar:`), known or not: a wildcard
    like `sidecar:*` must not let a key through the proxy port either."""
    return any(scope.startswith(ADMIN_PREFIX) for scope in scopes)


def check_admin_scope(scope: str) -> str:
    """`scope` when it is not reserved or is one of `ADMIN_SCOPES`; ValueError naming the
    reserved scopes otherwise (`sidecar:*` and misspellings are refused, not guessed at)."""
    if scope.startswith(ADMIN_PREFIX) and scope not in ADMIN_SCOPES:
        raise ValueError(f"{shown(scope)} is not a sidecar scope: use {', '.join(ADMIN_SCOPES)}")
    return scope
