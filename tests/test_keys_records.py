"""Pure units of a key record (`sidecar.keys.records`): its status, when rotation is due, and
its round trip through Redis fields. No I/O."""

from __future__ import annotations

import pytest

from sidecar.keys.records import KeyRecord

# --- a key record's status ----------------------------------------------------------------

NOW = 1_800_000_000.0
DAY = 86400.0


def made(**fields: object) -> KeyRecord:
    base: dict[str, object] = {
        "key_id": "id",
        "name": "n",
        "hash": "h",
        "scopes": ("orders:read",),
        "environment": "live",
        "created_at": NOW - DAY,
    }
    base.update(fields)
    return KeyRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({}, "active"),
        ({"expires_at": NOW + 1}, "active"),
        ({"expires_at": NOW}, "expired"),
        ({"expires_at": NOW - 1}, "expired"),
        ({"rotated_to": "new", "expires_at": NOW + 60}, "rotating"),
        ({"rotated_to": "new", "expires_at": NOW - 60}, "expired"),
        ({"revoked": True}, "revoked"),
        ({"revoked": True, "expires_at": NOW - 1}, "revoked"),
        ({"revoked": True, "rotated_to": "new", "expires_at": NOW + 60}, "revoked"),
    ],
)
def test_record_status(fields: dict[str, object], status: str) -> None:
    assert made(**fields).status(NOW) == status


@pytest.mark.parametrize(
    ("fields", "due"),
    [
        ({"created_at": NOW - 364 * DAY}, False),
        ({"created_at": NOW - 366 * DAY}, True),
        ({"created_at": NOW - 366 * DAY, "revoked": True}, False),
        ({"created_at": NOW - 366 * DAY, "expires_at": NOW - 1}, False),
        ({"created_at": NOW - 366 * DAY, "rotated_to": "x", "expires_at": NOW + 9}, False),
    ],
)
def test_record_rotation_due(fields: dict[str, object], due: bool) -> None:
    assert made(**fields).rotation_due(NOW, 365) is due


def test_rotation_due_follows_max_age_days() -> None:
    assert made(created_at=NOW - 2 * DAY).rotation_due(NOW, 1)
    assert not made(created_at=NOW - 2 * DAY).rotation_due(NOW, 3)


def test_record_round_trips_through_redis_fields() -> None:
    full = made(
        service="billing",
        expires_at=NOW + 5,
        rotated_from="old",
        rotated_to="new",
        last_used_at=NOW - 3,
        exposed=True,
        revoked=True,
        allow_ips=("10.0.0.0/8",),
    )
    as_bytes = {k.encode(): v.encode() for k, v in full.to_redis().items()}
    assert KeyRecord.from_redis(as_bytes) == full
    bare = made()
    stored = bare.to_redis()
    for absent in ("service", "expires_at", "rotated_from", "rotated_to", "last_used_at"):
        assert absent not in stored
    assert KeyRecord.from_redis(stored) == bare
