"""Pure: what an admin event says (SPEC §16) — the stream, the actions, the actor, the document.

Kept apart from the writing (`sidecar.audit.admin_events`) so the archive's pure table
definitions can name the stream without importing Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ADMIN_EVENTS_STREAM = "sidecar:admin-events"
ADMIN_EVENT_FIELD = "event"  # the field the auth events use too: one reader for both
Action = Literal[
    "key_created", "key_rotated", "key_revoked", "key_deleted", "signed_in", "sign_in_failed"
]
ACTIONS: tuple[Action, ...] = (
    "key_created",
    "key_rotated",
    "key_revoked",
    "key_deleted",
    "signed_in",
    "sign_in_failed",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: an admin key over the API (`kind="key"`, its name and id), or an operator
    at the command line (`kind="cli"`, name `cli:<os user>`, no key)."""

    kind: Literal["key", "cli"]
    name: str
    key_id: str | None = None
    client_ip: str | None = None
    request_id: str | None = None


def build_admin_event(
    ts: str,
    action: Action,
    actor: Actor,
    target: str | None,
    detail: dict[str, object] | None = None,
) -> dict[str, object]:
    """The event document: `{"v":1, "ts", "request_id", "action", "actor", "actor_key_id",
    "actor_key_name", "target", "client_ip", "detail"?}`. The actor's key id and name are
    repeated at the top level because the archive's `admin_events` table reads them there.
    `target` is a key name; `detail` holds ids and names only — never a key string."""
    document: dict[str, object] = {
        "v": 1,
        "ts": ts,
        "request_id": actor.request_id,
        "action": action,
        "actor": {"kind": actor.kind, "name": actor.name, "key_id": actor.key_id},
        "actor_key_id": actor.key_id,
        "actor_key_name": actor.name,
        "target": target,
        "client_ip": actor.client_ip,
    }
    if detail:
        document["detail"] = detail
    return document
