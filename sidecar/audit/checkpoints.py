"""Pure: retention checkpoints, what lets `audit verify` tell a trimmed prefix from deleted records.

Before retention trims a stream (SPEC §17), it records, for every writer whose records it is about
to remove, the last one of them: its `seq` and `digest` (what the next record's `prev` holds).
The checkpoints live in the Redis hash `{<stream>}:checkpoints` (the hash tag puts it in the
stream's slot), one field per writer id, each value one JSON object:

    {"stream":"…","writer":"<16 hex>","seq":N,"digest":"<hex>","minid":"<ms>-0","at":"<ISO time>"}

`minid` is the trim's cutoff (every record the checkpoint covers has a smaller stream id) and
`at` the time of the trim by Redis's clock. With an integrity key, `"mac":"<key id>:<64 hex>"`
is appended as the last member: the HMAC (`integrity.mac_text`) of the object's bytes without
it. Like the chain, a checkpoint is checked on its stored bytes, never on a re-serialisation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sidecar.audit.integrity import IntegrityError, IntegrityKeys, check_text_mac, mac_text

_MAC_TAIL = re.compile(rb',"mac":"([A-Za-z0-9_-]{1,32}:[0-9a-f]{64})"\}\Z')
_WRITER = re.compile(r"[0-9a-f]{16}\Z")
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_STREAM_ID = re.compile(r"([0-9]{1,19})-([0-9]{1,19})\Z")


def checkpoints_key(stream: str) -> str:
    """The Redis hash holding `stream`'s checkpoints, in the stream's cluster slot."""
    return f"{{{stream}}}:checkpoints"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last record of one writer that a retention pass removed (or was about to)."""

    stream: str
    writer: str
    seq: int
    digest: str
    minid: str
    at: str


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A stream id (`ms-seq`) as a pair that sorts as Redis orders the ids; ValueError if it is
    not one."""
    match = _STREAM_ID.match(entry_id)
    if match is None:
        raise ValueError("not a stream id (MS-SEQ)")
    return int(match.group(1)), int(match.group(2))


def encode_checkpoint(checkpoint: Checkpoint, keys: IntegrityKeys | None) -> bytes:
    """The hash value for `checkpoint`, with its `mac` as the last member when keyed."""
    text = json.dumps(
        {
            "stream": checkpoint.stream,
            "writer": checkpoint.writer,
            "seq": checkpoint.seq,
            "digest": checkpoint.digest,
            "minid": checkpoint.minid,
            "at": checkpoint.at,
        },
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")
    if keys is None:
        return text
    return text[:-1] + f',"mac":"{mac_text(keys, text)}"}}'.encode("ascii")


def decode_checkpoint(
    stream: str, writer: str, value: bytes, keys: IntegrityKeys | None
) -> Checkpoint:
    """The checkpoint stored for `writer` in `stream`'s hash; `IntegrityError` when it is
    malformed, names another stream or writer, or (with `keys`) lacks a valid `mac`.

    Without `keys` a `mac` is read past, not checked: a chain-only verification trusts
    whoever can write to Redis anyway."""
    match = _MAC_TAIL.search(value)
    body = value[: match.start()] + b"}" if match else value
    if keys is not None:
        if match is None:
            raise IntegrityError("the checkpoint has no mac, but an integrity key is configured")
        if not check_text_mac(keys, body, match.group(1).decode("ascii")):
            raise IntegrityError("the checkpoint's mac does not match (altered or forged)")
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError("the checkpoint is not JSON") from None
    if not isinstance(fields, dict):
        raise IntegrityError("the checkpoint is not a JSON object")
    checkpoint = _fields(fields)
    if checkpoint.stream != stream or checkpoint.writer != writer:
        raise IntegrityError("the checkpoint names another stream or writer than where it is kept")
    return checkpoint


def _fields(fields: dict[str, object]) -> Checkpoint:
    stream, writer, seq, digest, minid, at = (
        fields.get(name) for name in ("stream", "writer", "seq", "digest", "minid", "at")
    )
    if not (
        isinstance(stream, str)
        and isinstance(writer, str)
        and _WRITER.match(writer)
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 1
        and isinstance(digest, str)
        and _DIGEST.match(digest)
        and isinstance(minid, str)
        and _STREAM_ID.match(minid)
        and isinstance(at, str)
    ):
        raise IntegrityError("the checkpoint lacks a field or has one of the wrong shape")
    return Checkpoint(stream, writer, seq, digest, minid, at)
