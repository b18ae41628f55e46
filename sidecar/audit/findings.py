"""Pure: what `audit verify` reports — findings, and per writer and per stream what was checked.

A finding's `kind` is one of `gap`, `altered`, `forged`, `broken_link`, `reordered`,
`truncated`, `checkpoint`, `content` (sidecar.audit.verify says when each is raised). A report
keeps its first `MAX_SHOWN` findings in full and counts the rest, so a stream rewritten from end
to end costs no more memory than one with a handful of problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its kind, where it is (writer, seq or seq range, stream entry) and why."""

    kind: str
    writer: str
    detail: str
    seq: int | None = None
    last_seq: int | None = None
    entry_id: str | None = None


@dataclass(slots=True)
class WriterReport:
    """What was checked of one writer, and what was wrong (the first `MAX_SHOWN` in full)."""

    writer: str
    records: int = 0
    replays: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoint_seq: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    shown: list[Finding] = field(default_factory=list)

    @property
    def findings(self) -> int:
        """How many findings this writer has."""
        return sum(self.counts.values())

    def add(self, finding: Finding) -> None:
        """Count `finding`; keep it in full while fewer than `MAX_SHOWN` are."""
        self.counts[finding.kind] = self.counts.get(finding.kind, 0) + 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(finding)

    def flag(
        self,
        kind: str,
        detail: str,
        seq: int,
        entry_id: str | None = None,
        *,
        to: int | None = None,
    ) -> None:
        """Add a finding of this writer's: at `seq` (to `to`, for a range), in `entry_id`."""
        self.add(Finding(kind, self.writer, detail, seq, to, entry_id))


@dataclass(slots=True)
class StreamReport:
    """The verdict on one stream: its writers, and the findings no writer's chain holds."""

    stream: str
    entries: int
    writers: list[WriterReport]
    unattributed: WriterReport
    trimmed_writers: int  # writers all of whose records retention removed, as checkpointed

    @property
    def findings(self) -> int:
        """Every finding in the stream."""
        return self.unattributed.findings + sum(writer.findings for writer in self.writers)
