"""Pure: checking one stream's tamper evidence, writer by writer (SPEC §17, `audit verify`).

A `StreamVerifier` is fed the stream's entries in stream order and reports, per writer:

- `gap`: seq numbers missing from the chain (deleted records), unless a valid retention
  checkpoint covers them (a trimmed prefix is no gap);
- `altered`: a record whose MAC does not match but which sits where its chain expects it;
- `forged`: an entry that is no chain link (no tail, not JSON, no mac or an unknown key while
  keyed, a MAC that fits no chain), or a seq seen before with a different digest;
- `broken_link`: a record whose `prev` is not the digest of the writer's previous seq;
- `reordered`: a seq that arrives after a later one of its writer (it was moved);
- `truncated`: fewer records than the writer's high-water mark says it appended;
- `checkpoint`: a checkpoint that is forged or does not match the records it names;
- `content`: what the caller's content check reports (cleartext while encryption is on).

A seq seen again with the same digest is a replay (a retried batch, a spool replayed after its
mark was lost) and harmless. State is per writer, never per record: the last seq and digest and
the digests of the last `window` seqs (to compare replays with), so millions of entries stream
through. A replay of a seq older than the window cannot be compared; it is accepted (keyed, its
MAC still proves the writer made it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from sidecar.audit.checkpoints import Checkpoint, decode_checkpoint, stream_id_key
from sidecar.audit.findings import Finding, StreamReport, WriterReport
from sidecar.audit.integrity import ChainLink, IntegrityError, IntegrityKeys, check

ContentCheck = Callable[[dict[str, Any]], list[str]]
# A writer's checkpoint as the verifier is given it: the Redis hash's value (checked here, when
# the writer's records need it), or one kept elsewhere (the archive's `chain_checkpoints`)
# that the caller checked already: the checkpoint, or why it failed (reported here, when
# needed, as a failed hash value would be).
StoredCheckpoint = bytes | Checkpoint | IntegrityError

WINDOW = 256
_MAC_MEMBER = b',"mac":"'


@dataclass(slots=True)
class _Chain:
    report: WriterReport
    last_seq: int
    last_digest: str
    recent: dict[int, str]  # seq -> digest, the last WINDOW seqs seen, oldest first
    floor: int  # the lowest seq that was in view: replays of older ones cannot be compared
    pending: Checkpoint | None = None  # a checkpoint ahead of the first record: to be met


class StreamVerifier:
    """Feed `feed(entry_id, document)` in stream order, then `finish()` for the report.

    `checkpoints` are the writers' checkpoints (`StoredCheckpoint`) by writer id, `marks`
    each writer's high-water mark (the highest seq it appended), read before the entries.
    With `since`, what precedes the start is out of view: a writer's first record is its
    starting point, and writers not seen are not judged."""

    def __init__(
        self,
        stream: str,
        keys: IntegrityKeys | None,
        *,
        checkpoints: Mapping[str, StoredCheckpoint] | None = None,
        marks: Mapping[str, int] | None = None,
        since: bool = False,
        content: ContentCheck | None = None,
        window: int = WINDOW,
    ) -> None:
        self.stream = stream
        self._keys = keys
        self._marks = dict(marks or {})
        self._since = since
        self._content = content
        self._window = window
        self._entries = 0
        self._chains: dict[str, _Chain] = {}
        self._unattributed = WriterReport("")
        self._checkpoints = dict(checkpoints or {})

    def feed(self, entry_id: str, document: bytes | None) -> None:
        """Check one stream entry; `document` is None when the entry lacks the document field."""
        self._entries += 1
        if document is None:
            self._unattributed.add(Finding("forged", "", "no document field", entry_id=entry_id))
            return
        try:
            link = check(self.stream, document, self._keys)
        except IntegrityError as exc:
            self._failed(entry_id, document, str(exc))
            return
        parsed = self._parse(document) if self._content or self._keys is None else {}
        if parsed is None:
            self._add(
                link.writer,
                Finding("forged", link.writer, "not a JSON object", link.seq, entry_id=entry_id),
            )
            return
        self._link(entry_id, link, parsed)

    def finish(self) -> StreamReport:
        """The report, once every entry was fed: tails against the marks and checkpoints."""
        trimmed = 0
        for writer, chain in self._chains.items():
            self._close(writer, chain)
        if not self._since:
            for writer in self._checkpoints.keys() | self._marks.keys():
                if writer not in self._chains:
                    trimmed += self._unseen(writer)
        writers = sorted(
            (chain.report for chain in self._chains.values()), key=attrgetter("writer")
        )
        return StreamReport(self.stream, self._entries, writers, self._unattributed, trimmed)

    # -- one record ---------------------------------------------------------------------------

    def _failed(self, entry_id: str, document: bytes, reason: str) -> None:
        """An entry that failed its check: altered when its MAC names a known key and it sits
        where a writer's chain expects a new seq (a chain known from its records, or, for its
        first one, from the writer's mark or checkpoint), forged otherwise."""
        try:
            link = check(self.stream, document, None)
        except IntegrityError:
            self._unattributed.add(Finding("forged", "", reason, entry_id=entry_id))
            return
        known_key = self._keys is not None and _mac_key_id(document) in self._keys.keys
        chain = self._chains.get(link.writer)
        known = link.writer in self._marks or link.writer in self._checkpoints
        if known_key and chain is None and known:
            chain = self._start(entry_id, link)
        if chain is None or not known_key or link.seq <= chain.last_seq:
            self._add(link.writer, Finding("forged", link.writer, reason, link.seq, None, entry_id))
            return
        self._follow(chain, entry_id, link, linked=False)
        chain.report.flag("altered", reason, link.seq, entry_id)
        self._advance(chain, entry_id, link, count=False)

    def _link(self, entry_id: str, link: ChainLink, parsed: dict[str, Any]) -> None:
        chain = self._chains.get(link.writer) or self._start(entry_id, link)
        if link.seq <= chain.last_seq:
            self._repeat(chain, entry_id, link)
            return
        self._follow(chain, entry_id, link, linked=True)
        self._advance(chain, entry_id, link, count=True)
        if self._content is not None:
            for problem in self._content(parsed):
                chain.report.flag("content", problem, link.seq, entry_id)

    def _follow(self, chain: _Chain, entry_id: str, link: ChainLink, *, linked: bool) -> None:
        """A seq after the writer's last: the seqs in between are deleted; the next one must
        name the last one's digest (unless it is itself altered: then its `prev` proves nothing)."""
        if link.seq > chain.last_seq + 1:
            self._gap(chain.report, chain.last_seq + 1, link.seq - 1, "deleted records")
        elif linked and link.prev != chain.last_digest:
            chain.report.flag(
                "broken_link", "prev is not the digest of the previous seq", link.seq, entry_id
            )

    def _start(self, entry_id: str, link: ChainLink) -> _Chain:
        """A writer's chain, positioned before its first record in view: at its checkpoint when
        retention trimmed it (the next seq must name the checkpoint's digest, and older seqs
        are replays of trimmed records), else before seq 1 (so anything earlier missing is a
        gap), or right before the record when what precedes it is out of view (`since`) or
        still in the stream under a checkpoint ahead of the trim."""
        report = WriterReport(link.writer)
        # Seq 1 has no predecessor, whatever is in view: its prev must be "".
        chain = _Chain(report, link.seq - 1, "" if link.seq == 1 else link.prev, {}, link.seq)
        self._chains[link.writer] = chain
        checkpoint = None if self._since else self._checkpoint(link.writer)
        if checkpoint is not None:
            report.checkpoint_seq = checkpoint.seq
        trimmed = checkpoint is not None and (
            stream_id_key(entry_id) >= stream_id_key(checkpoint.minid) or checkpoint.seq < link.seq
        )
        if checkpoint is not None and trimmed:
            chain.last_seq, chain.last_digest = checkpoint.seq, checkpoint.digest
            chain.floor = checkpoint.seq + 1
        elif checkpoint is not None:
            # Retention wrote the checkpoint but had not trimmed yet (it crashed, or is
            # trimming now): the records it covers are still here, older than its cutoff.
            chain.pending = checkpoint
        elif not self._since:
            chain.last_seq, chain.last_digest = 0, ""
        return chain

    def _repeat(self, chain: _Chain, entry_id: str, link: ChainLink) -> None:
        """A seq at or below the writer's last: a replay, a forgery, or a moved record."""
        seen = chain.recent.get(link.seq)
        report = chain.report
        if seen == link.digest:
            report.replays += 1
        elif seen is not None:
            report.flag("forged", "seq seen before with another digest", link.seq, entry_id)
        elif link.seq >= max(chain.floor, chain.last_seq - self._window + 1):
            report.flag("reordered", f"arrives after seq {chain.last_seq}", link.seq, entry_id)
        else:
            report.replays += 1  # older than the window: not comparable (see the docstring)

    def _advance(self, chain: _Chain, entry_id: str, link: ChainLink, *, count: bool) -> None:
        pending = chain.pending
        if pending is not None and link.seq >= pending.seq:
            chain.pending = None
            if link.seq == pending.seq and link.digest != pending.digest:
                chain.report.flag(
                    "checkpoint", "the checkpoint's digest is not this record's", link.seq, entry_id
                )
        chain.last_seq = link.seq
        chain.last_digest = link.digest
        chain.recent[link.seq] = link.digest
        if len(chain.recent) > self._window:
            del chain.recent[next(iter(chain.recent))]  # dicts keep insertion order: the oldest
        chain.report.last_seq = link.seq
        if chain.report.first_seq is None:
            chain.report.first_seq = link.seq
        if count:
            chain.report.records += 1

    # -- the end of the stream ----------------------------------------------------------------

    def _close(self, writer: str, chain: _Chain) -> None:
        report = chain.report
        if chain.pending is not None:
            self._gap(
                report, chain.last_seq + 1, chain.pending.seq, "missing before the checkpoint's seq"
            )
        covered = max(chain.last_seq, report.checkpoint_seq or 0)
        self._truncated(report, self._marks.get(writer), covered)

    def _unseen(self, writer: str) -> int:
        """A writer with a checkpoint or a mark but no record in view; 1 if fully trimmed."""
        if writer not in self._marks:
            return 1  # retention removed all its records; its checkpoint vouches for nothing
        checkpoint = self._checkpoint(writer)
        covered = checkpoint.seq if checkpoint is not None else 0
        report = WriterReport(writer, checkpoint_seq=covered or None)
        self._truncated(report, self._marks.get(writer), covered)
        if report.findings:
            self._chains[writer] = _Chain(report, covered, "", {}, covered + 1)
            return 0
        return 1

    def _truncated(self, report: WriterReport, mark: int | None, covered: int) -> None:
        if mark is not None and mark > covered:
            detail = f"the writer's mark says it appended up to seq {mark}"
            report.flag("truncated", detail, covered + 1, to=mark)

    # -- helpers ------------------------------------------------------------------------------

    def _gap(self, report: WriterReport, first: int, last: int, why: str) -> None:
        report.flag("gap", why, first, to=last)

    def _checkpoint(self, writer: str) -> Checkpoint | None:
        """`writer`'s checkpoint, checked when first needed: the checkpoint of a writer whose
        records are all gone is never read, so a key that signed only those may be dropped."""
        value = self._checkpoints.get(writer)
        if value is None or isinstance(value, Checkpoint):
            return value
        try:
            if isinstance(value, IntegrityError):
                raise value
            return decode_checkpoint(self.stream, writer, value, self._keys)
        except IntegrityError as exc:
            self._unattributed.add(Finding("checkpoint", writer, str(exc)))
            self._checkpoints.pop(writer)
            return None

    def _add(self, writer: str, finding: Finding) -> None:
        """A finding for `writer`'s report when its chain is known, else unattributed (so forged
        writer ids cost no state)."""
        chain = self._chains.get(writer)
        (chain.report if chain is not None else self._unattributed).add(finding)

    @staticmethod
    def _parse(document: bytes) -> dict[str, Any] | None:
        try:
            parsed = json.loads(document)
        except (UnicodeDecodeError, ValueError):
            return None
        return parsed if isinstance(parsed, dict) else None


def _mac_key_id(document: bytes) -> str | None:
    """The key id a document's `mac` names, or None when it has none."""
    _head, member, tail = document.rpartition(_MAC_MEMBER)
    if not member:
        return None
    return tail.partition(b":")[0].decode("ascii", "replace")
