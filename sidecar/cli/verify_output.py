"""What `sidecar audit verify` prints: a line per writer, its findings, a line per stream and a
summary; or, with `--json`, one JSON object per line of each of those (`"type"` says which).

Writer ids, entry ids and details come from the stream, which anyone with write access to Redis
can fill: every text line goes through `terminal.printable`, every JSON one `terminal.json_line`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sidecar.audit.findings import Finding, StreamReport, WriterReport
from sidecar.cli.terminal import json_line, printable


def print_reports(
    reports: list[StreamReport], *, as_json: bool, keyed: bool, since: str | None
) -> None:
    """Print every report, then the summary."""
    lines = _json_lines(reports, keyed, since) if as_json else _text_lines(reports, keyed, since)
    for line in lines:
        print(line)


def _text_lines(reports: list[StreamReport], keyed: bool, since: str | None) -> Iterator[str]:
    for report in reports:
        for writer in report.writers:
            yield printable(f"{report.stream}  {_writer_line(writer)}")
            yield from _text_findings(writer)
        if report.unattributed.findings:
            yield printable(
                f"{report.stream}  not in any writer's chain  "
                f"findings {_counts(report.unattributed)}"
            )
            yield from _text_findings(report.unattributed)
        trimmed = f" ({report.trimmed_writers} fully trimmed)" if report.trimmed_writers else ""
        yield printable(
            f"{report.stream}  {report.entries} entries, {len(report.writers)} writers"
            f"{trimmed}, {report.findings} findings"
        )
    findings = sum(report.findings for report in reports)
    entries = sum(report.entries for report in reports)
    scope = f" since {since}" if since else ""
    mode = "mac and chain" if keyed else "chain only"
    verdict = "FAILED" if findings else "ok"
    yield printable(
        f"verify{scope} ({mode}): {len(reports)} streams, {entries} entries, "
        f"{findings} findings: {verdict}"
    )


def _writer_line(writer: WriterReport) -> str:
    seqs = f"seq {writer.first_seq}-{writer.last_seq}" if writer.first_seq is not None else "seq -"
    checkpoint = f"  checkpoint {writer.checkpoint_seq}" if writer.checkpoint_seq else ""
    verdict = f"findings {_counts(writer)}" if writer.findings else "ok"
    return (
        f"writer {writer.writer}  records {writer.records}  replays {writer.replays}  "
        f"{seqs}{checkpoint}  {verdict}"
    )


def _counts(writer: WriterReport) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(writer.counts.items()))
    return f"{writer.findings} ({kinds})"


def _text_findings(writer: WriterReport) -> Iterator[str]:
    for finding in writer.shown:
        where = []
        if finding.seq is not None:
            seqs = f"{finding.seq}"
            if finding.last_seq is not None and finding.last_seq != finding.seq:
                seqs += f"-{finding.last_seq}"
            where.append(f"seq {seqs}")
        if finding.entry_id is not None:
            where.append(f"entry {finding.entry_id}")
        if finding.writer and not writer.writer:
            where.append(f"writer {finding.writer}")
        yield printable(f"    {finding.kind}: {'  '.join(where)}  {finding.detail}")
    hidden = writer.findings - len(writer.shown)
    if hidden:
        yield f"    ... and {hidden} more"


def _json_lines(reports: list[StreamReport], keyed: bool, since: str | None) -> Iterator[str]:
    for report in reports:
        for writer in [*report.writers, report.unattributed]:
            if writer.writer:
                yield json_line(_writer_object(report.stream, writer))
            for finding in writer.shown:
                yield json_line(_finding_object(report.stream, finding))
        yield json_line(
            {
                "type": "stream",
                "stream": report.stream,
                "entries": report.entries,
                "writers": len(report.writers),
                "trimmed_writers": report.trimmed_writers,
                "findings": report.findings,
                "unattributed": report.unattributed.counts,
            }
        )
    findings = sum(report.findings for report in reports)
    yield json_line(
        {
            "type": "summary",
            "ok": findings == 0,
            "streams": len(reports),
            "entries": sum(report.entries for report in reports),
            "findings": findings,
            "keyed": keyed,
            "since": since,
        }
    )


def _writer_object(stream: str, writer: WriterReport) -> dict[str, Any]:
    return {
        "type": "writer",
        "stream": stream,
        "writer": writer.writer,
        "records": writer.records,
        "replays": writer.replays,
        "first_seq": writer.first_seq,
        "last_seq": writer.last_seq,
        "checkpoint_seq": writer.checkpoint_seq,
        "findings": writer.counts,
        "findings_shown": len(writer.shown),
    }


def _finding_object(stream: str, finding: Finding) -> dict[str, Any]:
    return {
        "type": "finding",
        "stream": stream,
        "writer": finding.writer or None,
        "kind": finding.kind,
        "seq": finding.seq,
        "last_seq": finding.last_seq,
        "entry": finding.entry_id,
        "detail": finding.detail,
    }
