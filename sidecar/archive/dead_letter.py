"""The dead-letter streams: where an entry the archive cannot take is parked, with the reason,
instead of being retried for ever (SPEC §15).

`<stream>:dead-letter` gets one entry per poison entry, fields `id` (its id in the stream),
`field` (the field it was read from), `value` (the field's bytes, untouched: encrypted content
stays encrypted) and `reason` (a fixed phrase, never content). Parking comes before the
acknowledgement: a crash between the two parks the entry twice when it is claimed again, and
never loses it. Nothing trims a dead-letter stream: an operator reads and clears it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.archive.rows import Poison
from sidecar.archive.tables import ArchivedStream
from sidecar.storage.client import RedisClient


async def park(redis: RedisClient, stream: ArchivedStream, poison: Sequence[Poison]) -> None:
    """Append each of `poison` to `stream`'s dead-letter stream, in order."""
    if not poison:
        return
    # Not transactional: on a cluster the dead-letter stream may live on another node.
    async with redis.pipeline(transaction=False) as pipe:
        for entry in poison:
            pipe.xadd(
                stream.dead_letter,
                {
                    "id": entry.entry_id,
                    "field": stream.field,
                    "value": entry.value,
                    "reason": entry.reason,
                },
            )
        await pipe.execute()
