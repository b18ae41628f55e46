"""Pure: one spool entry on disk, and how a replay decides whether to trust it (SPEC §17).

An entry is one line:

    {crc32c, 8 lowercase hex} {writer id, 16 hex} {seq} {document}\\n

The CRC32C covers `{writer id} {seq} {document}`, so a flipped bit anywhere in the entry is
caught, the sequence number included: a damaged seq can no longer be replayed and poison the
writer's high-water mark in Redis (which would silently drop every later record of that
writer). Documents are compact JSON, which holds no raw newline, so a line is an entry.

The CRC catches damage, not forgery: anyone who can write the spool can compute one. So the
line's writer and seq must also be the document's own chain members (`integrity.check`, read
without a key); the MAC itself is for `audit verify` to judge once the record is in Redis.

Segments of older releases hold `{writer id} {seq} {document}` lines with no CRC and documents
with no chain: those are read by `decode_legacy`, and nothing but their shape can be checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crc32c import crc32c

from sidecar.audit.integrity import IntegrityError, check

_WRITER = re.compile(rb"[0-9a-f]{16}\Z")
_SEQ = re.compile(rb"[1-9][0-9]{0,18}\Z")
_CRC = re.compile(rb"[0-9a-f]{8}\Z")


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One document waiting for Redis, numbered per writer so a replay appends it once."""

    writer_id: str
    seq: int
    document: bytes


class CorruptEntry(ValueError):
    """A spool line that must not be replayed; the message says why, never what it holds."""


def encode(record: SpooledRecord) -> bytes:
    """The entry's line, newline included."""
    if b"\n" in record.document:
        raise ValueError("a spooled document holds no newline")  # compact JSON never does
    body = f"{record.writer_id} {record.seq} ".encode("ascii") + record.document
    return f"{crc32c(body):08x} ".encode("ascii") + body + b"\n"


def decode(line: bytes, *, stream: str, verify_chain: bool = True) -> SpooledRecord:
    """The record of a whole line (ending in a newline); `CorruptEntry` if any check fails:
    torn, CRC, writer id shape, seq, or (with `verify_chain`) the document's own chain."""
    if not line.endswith(b"\n"):
        raise CorruptEntry("torn: no newline at the end (the write was cut short)")
    crc, space, body = line[:-1].partition(b" ")
    if not space or not _CRC.match(crc):
        raise CorruptEntry("no checksum at the start of the line")
    if crc32c(body) != int(crc, 16):
        raise CorruptEntry("checksum mismatch")
    record = _fields(body)
    if verify_chain:
        try:
            link = check(stream, record.document, None)
        except IntegrityError as exc:
            raise CorruptEntry(f"document chain unreadable: {exc}") from None
        if (link.writer, link.seq) != (record.writer_id, record.seq):
            raise CorruptEntry("the line's writer/seq differ from the document's own")
    return record


def decode_legacy(line: bytes) -> SpooledRecord:
    """The record of a line written by an older release (no CRC, no chain to compare with)."""
    if not line.endswith(b"\n"):
        raise CorruptEntry("torn: no newline at the end (the write was cut short)")
    return _fields(line[:-1])


def _fields(body: bytes) -> SpooledRecord:
    parts = body.split(b" ", 2)
    if len(parts) != 3:
        raise CorruptEntry("not `writer seq document`")
    writer, seq, document = parts
    if not _WRITER.match(writer):
        raise CorruptEntry("the writer id is not 16 hex digits")
    if not _SEQ.match(seq):
        raise CorruptEntry("the sequence number is not a positive integer")
    return SpooledRecord(writer.decode("ascii"), int(seq), document)
