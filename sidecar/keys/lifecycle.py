"""The key lifecycle as an operator drives it: create, rotate, revoke, delete — each one
checked, carried out in the store, and recorded as an admin event before it returns.

The one path for both the CLI (`sidecar keys …`, actor `cli:<user>`) and the admin API (actor:
the admin key), so the two cannot drift apart in what they check or what they record.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sidecar.audit.admin_events import Actor, AdminEventLog
from sidecar.config import Keys
from sidecar.durations import iso
from sidecar.errors import Unavailable
from sidecar.keys.format import check_name, check_scope
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.records import KeyRecord
from sidecar.keys.scopes import check_admin_scope
from sidecar.keys.store import KeyStore, NewKey


class InvalidKeyRequest(ValueError):
    """A value a new key cannot have; `field` names it as the API's body does (`name`,
    `scopes`, `service`, `allow_ips`), the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A new key's checked values."""

    name: str
    scopes: tuple[str, ...]
    service: str | None
    allow_ips: tuple[str, ...]


def check_key_request(
    name: str, scopes: Iterable[str], service: str | None, allow_ips: Iterable[str]
) -> KeyRequest:
    """The values of a new key, checked without touching Redis: `InvalidKeyRequest` names
    the first bad one. A reserved scope must be one of `ADMIN_SCOPES` (SPEC §16)."""
    checks: list[tuple[str, list[str]]] = [
        ("name", [name]),
        ("scopes", list(scopes)),
        ("service", [] if service is None else [service]),
        ("allow_ips", list(allow_ips)),
    ]
    for field, values in checks:
        for value in values:
            try:
                if field == "scopes":
                    check_admin_scope(check_scope(value))
                elif field == "allow_ips":
                    ipaddress.ip_network(value, strict=False)
                else:
                    check_name(value)
            except ValueError as exc:
                raise InvalidKeyRequest(field, str(exc)) from None
    scope_list = tuple(checks[1][1])
    if not scope_list:
        raise InvalidKeyRequest("scopes", "a key needs at least one scope")
    return KeyRequest(name, scope_list, service, tuple(checks[3][1]))


class KeyLifecycle:
    """Create, rotate, revoke and delete keys; every change is an admin event, durable
    before the method returns."""

    def __init__(
        self, store: KeyStore, keys: Keys, hasher: SecretHasher, admin_events: AdminEventLog
    ) -> None:
        self.store = store
        self._keys = keys
        self._hasher = hasher
        self._events = admin_events

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        expires_at: float | None,
        allow_ips: Iterable[str] = (),
        service: str | None = None,
        actor: Actor,
    ) -> NewKey:
        """Issue a key under a new name (`InvalidKeyRequest`, `KeyExists`)."""
        request = check_key_request(name, scopes, service, allow_ips)
        self._admit()
        new = await self.store.create(
            name=request.name,
            scopes=request.scopes,
            prefix=self._keys.prefix,
            environment=self._keys.environment,
            hasher=self._hasher,
            expires_at=expires_at,
            service=request.service,
            allow_ips=request.allow_ips,
        )
        record = new.record
        detail: dict[str, object] = {"key_id": record.key_id, "scopes": list(record.scopes)}
        if record.expires_at is not None:
            detail["expires_at"] = iso(record.expires_at)
        await self._events.record("key_created", actor, record.name, detail)
        return new

    async def rotate(self, name: str, *, grace_s: float, actor: Actor) -> NewKey:
        """Issue a successor under `name`; the old key ends after `grace_s` (`NoSuchKey`,
        `KeyRevoked`)."""
        self._admit()
        new = await self.store.rotate(
            name, grace_s=grace_s, prefix=self._keys.prefix, hasher=self._hasher
        )
        detail: dict[str, object] = {
            "key_id": new.record.key_id,
            "rotated_from": new.record.rotated_from,
            "grace_s": grace_s,
        }
        await self._events.record("key_rotated", actor, name, detail)
        return new

    async def revoke(self, name: str, *, actor: Actor) -> list[str]:
        """Revoke every key of `name` (`NoSuchKey`); the ids revoked."""
        self._admit()
        ids = await self.store.revoke(name)
        await self._events.record("key_revoked", actor, name, {"key_ids": ids})
        return ids

    async def delete(self, name: str, *, actor: Actor) -> list[str]:
        """Remove every record of `name` (`NoSuchKey`); the ids deleted."""
        self._admit()
        ids = await self.store.delete(name)
        await self._events.record("key_deleted", actor, name, {"key_ids": ids})
        return ids

    def describe(self, record: KeyRecord, now: float) -> dict[str, object]:
        """A key's metadata as `keys list --json` and `GET /admin/v1/keys` show it: never its
        hash, never the key."""
        return describe(record, now, self._keys.max_age_days)

    def _admit(self) -> None:
        # Refused before the change, not after: a key created whose event then cannot be
        # kept would exist with nobody told its string, and nothing recording who made it.
        if not self._events.writer.can_accept():
            raise Unavailable("admin events cannot be kept right now", retry_after=5)


def describe(record: KeyRecord, now: float, max_age_days: int) -> dict[str, object]:
    """A key's metadata (see `KeyLifecycle.describe`)."""
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
        "rotation_due": record.rotation_due(now, max_age_days),
        "exposed": record.exposed,
        "allow_ips": list(record.allow_ips),
    }
