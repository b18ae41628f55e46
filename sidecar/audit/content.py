"""Pure: which fields of an audit record or event carry request content, and so are encrypted
when `audit.encryption_key_file` is set (SPEC §17), and what a stored document holds in them.

Everything else (ts, request_id, method, route, status, key id and name, scopes, client IP,
sizes, body encoding, truncation flags, durations, `inspected`, the integrity members) stays
readable: retention, `audit query`'s filters and `audit verify` need it without a key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

SEALED_PREFIX = "enc:v2:"
LEGACY_PREFIX = "enc:v1:"


@dataclass(frozen=True, slots=True)
class ContentField:
    """A field that carries request content: `section.name` (or `name` at the top level)."""

    section: str | None
    name: str
    structured: bool = False  # a dict, sealed as its compact JSON
    legacy: bool = False  # v1 sealed it too (the bodies): an `enc:v1:` token is accepted

    @property
    def path(self) -> str:
        """The field's dotted path, as bound into the associated data."""
        return self.name if self.section is None else f"{self.section}.{self.name}"


RECORD_FIELDS = (
    ContentField(None, "path"),
    ContentField(None, "query"),
    ContentField("request", "headers", structured=True),
    ContentField("request", "raw_body", legacy=True),
    ContentField("request", "mapped_body", legacy=True),
    ContentField("response", "headers", structured=True),
    ContentField("response", "body", legacy=True),
)
EVENT_FIELDS = (ContentField(None, "path"),)


@dataclass(frozen=True, slots=True)
class ContentFinding:
    """A content field stored in a way encryption should have prevented: `cleartext` (not a
    token at all) or `legacy` (an `enc:v1:` token, not bound to its record or field)."""

    field: str
    kind: Literal["cleartext", "legacy"]

    def __str__(self) -> str:
        if self.kind == "legacy":
            return f"{self.field}: legacy enc:v1 token (not bound to its record or field)"
        return f"{self.field}: cleartext while encryption is on"


def content_findings(
    document: Mapping[str, object], fields: Sequence[ContentField] = RECORD_FIELDS
) -> list[ContentFinding]:
    """What of `document`'s content fields (a record's by default; `EVENT_FIELDS` for an event)
    is cleartext or a v1 token: for a reader who knows encryption is on. Reads no key, so it
    cannot tell a forged v2 token from a good one: decrypting does."""
    findings: list[ContentFinding] = []
    for field in fields:
        container = document if field.section is None else document.get(field.section)
        if not isinstance(container, Mapping) or field.name not in container:
            continue
        value = container[field.name]
        if value is None:
            continue
        if isinstance(value, str) and value.startswith(SEALED_PREFIX):
            continue
        legacy = field.legacy and isinstance(value, str) and value.startswith(LEGACY_PREFIX)
        findings.append(ContentFinding(field.path, "legacy" if legacy else "cleartext"))
    return findings
