"""Pure: the chain checkpoints retention writes before it drops a day, in `chain_checkpoints`.

Dropping a day partition removes the oldest records of every writer in it; `audit verify`
must then start each writer's chain after them rather than report the day as a gap (SPEC §17).
So, before the drop, each writer's last record in the dropped days is recorded as
(stream, writer, seq, digest), `digest` being what the writer's next record holds as `prev`.

With an integrity key the row carries `mac`: `integrity.mac_text` over `checkpoint_text`, the
five values on lines of their own, so a checkpoint cannot be moved to another writer or
stream, or forged, by someone who can write to the database but has no key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sidecar.audit.integrity import IntegrityKeys, check_text_mac, mac_text


@dataclass(frozen=True, slots=True)
class ChainCheckpoint:
    """Where a partition drop cut one writer's chain in one stream."""

    stream: str
    writer: str
    seq: int
    digest: str
    cut_at: datetime


def checkpoint_text(checkpoint: ChainCheckpoint) -> bytes:
    """The bytes a checkpoint's `mac` covers: stream, writer, seq, digest and the cut's time
    (UTC, ISO 8601 to the microsecond), one per line."""
    cut_at = checkpoint.cut_at.astimezone(UTC).isoformat(timespec="microseconds")
    fields = (checkpoint.stream, checkpoint.writer, str(checkpoint.seq), checkpoint.digest, cut_at)
    return "\n".join(fields).encode("utf-8")


def sign_checkpoint(checkpoint: ChainCheckpoint, keys: IntegrityKeys | None) -> str | None:
    """The `mac` column for `checkpoint`: None without an integrity key."""
    return None if keys is None else mac_text(keys, checkpoint_text(checkpoint))


def checkpoint_signed(checkpoint: ChainCheckpoint, mac: str | None, keys: IntegrityKeys) -> bool:
    """Whether `mac` (the column as read) is a valid MAC of `checkpoint` under `keys`."""
    return mac is not None and check_text_mac(keys, checkpoint_text(checkpoint), mac)
