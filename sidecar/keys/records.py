"""Pure: what Redis holds about one key (`KeyRecord`), and its status at a moment.

No Redis here: the store reads and writes these, the cache keeps them, the authenticator
checks them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def text(value: bytes | str) -> str:
    """A Redis reply's bytes as text (replies are bytes unless decoded by the client)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What Redis holds about one key. Times are Unix seconds."""

    key_id: str
    name: str
    hash: str = field(repr=False)
    scopes: tuple[str, ...]
    environment: str
    created_at: float
    service: str | None = None
    expires_at: float | None = None
    revoked: bool = False
    rotated_from: str | None = None
    rotated_to: str | None = None
    last_used_at: float | None = None
    exposed: bool = False
    allow_ips: tuple[str, ...] = ()

    def status(self, now: float) -> str:
        """`revoked`, `expired`, `rotating` (old key inside its grace) or `active`."""
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.rotated_to is not None:
            return "rotating"
        return "active"

    def rotation_due(self, now: float, max_age_days: int) -> bool:
        """True for an active key older than `max_age_days`."""
        return self.status(now) == "active" and now - self.created_at > max_age_days * 86400

    def to_redis(self) -> dict[Any, str]:  # Any: redis-py's key type is a wide union
        """The record as the fields of its Redis hash (absent values left out)."""
        fields = {
            "id": self.key_id,
            "name": self.name,
            "hash": self.hash,
            "scopes": json.dumps(list(self.scopes)),
            "environment": self.environment,
            "created_at": repr(self.created_at),
            "revoked": "1" if self.revoked else "0",
            "exposed": "1" if self.exposed else "0",
            "allow_ips": json.dumps(list(self.allow_ips)),
        }
        optional = {
            "service": self.service,
            "expires_at": None if self.expires_at is None else repr(self.expires_at),
            "rotated_from": self.rotated_from,
            "rotated_to": self.rotated_to,
            "last_used_at": None if self.last_used_at is None else repr(self.last_used_at),
        }
        fields.update({name: value for name, value in optional.items() if value is not None})
        return fields

    @classmethod
    def from_redis(cls, raw: Mapping[bytes | str, bytes | str]) -> KeyRecord:
        """The record from its Redis hash, as `to_redis` wrote it."""
        data = {text(k): text(v) for k, v in raw.items()}

        def number(name: str) -> float | None:
            return float(data[name]) if name in data else None

        return cls(
            key_id=data["id"],
            name=data["name"],
            hash=data["hash"],
            scopes=tuple(json.loads(data["scopes"])),
            environment=data["environment"],
            created_at=float(data["created_at"]),
            service=data.get("service"),
            expires_at=number("expires_at"),
            revoked=data.get("revoked") == "1",
            rotated_from=data.get("rotated_from"),
            rotated_to=data.get("rotated_to"),
            last_used_at=number("last_used_at"),
            exposed=data.get("exposed") == "1",
            allow_ips=tuple(json.loads(data.get("allow_ips", "[]"))),
        )
