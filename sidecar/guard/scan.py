"""Pure: one body's scan for the data guard: what to look for, what was found and where, the
walk of a parsed JSON document, and what `reject` mode makes of the findings.

Findings name what was found and where (`card_number`, `credential:/user/password`), never
the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from sidecar.errors import ForbiddenData
from sidecar.guard import jsondoc
from sidecar.guard.cards import mask_cards, might_hold_cards
from sidecar.guard.credentials import (
    REDACTED,
    finding_label,
    is_credential_name,
    is_empty,
    might_name_credentials,
)

CARD_FINDING = "card_number"
CREDENTIAL_FINDING = "credential"  # reported as "credential:{pointer or field name}"
MAX_DEPTH = 64
_DETAIL_FIELDS = 5

BodyKind = Literal["json", "form", "text"]


def worth_scanning(text: str, kind: BodyKind | None, scan: Scan) -> bool:
    """The fast path, for most bodies: no run of 13 digits and no credential word anywhere
    means nothing to find, without parsing. Bodies that could spell a name or a digit in an
    escape (JSON `\\u`, form `%` or `+`) always get the full scan."""
    if "\\u" in text or (kind == "form" and ("%" in text or "+" in text)):
        return True
    if scan.cards and might_hold_cards(text):
        return True
    return scan.credentials and might_name_credentials(text)


@dataclass(slots=True)
class Scan:
    """One body's walk: what to look for, what was found, whether anything changed."""

    cards: bool
    credentials: bool
    findings: list[str] = field(default_factory=list)
    changed: bool = False
    deep: bool = False  # a JSON walk gave up on nesting (kept across `restart`)
    _path: list[str] = field(default_factory=list)

    def restart(self) -> None:
        """Forget a walk that was abandoned (the body is then scanned as text instead)."""
        self.findings.clear()
        self.changed = False
        self._path.clear()

    def found(self, finding: str) -> None:
        """Note `finding` once."""
        if finding not in self.findings:
            self.findings.append(finding)

    def found_credential(self, where: str) -> None:
        """Note a credential field found at `where` (a JSON pointer or a field name)."""
        self.found(f"{CREDENTIAL_FINDING}:{finding_label(where)}")

    def text(self, text: str) -> str:
        """`text` with its card numbers masked (when looking for cards)."""
        if not self.cards:
            return text
        masked, found = mask_cards(text)
        if found:
            self.found(CARD_FINDING)
            self.changed = True
        return masked

    def value(self, value: object, depth: int) -> object:
        """A parsed JSON value, walked: members as dicts, findings masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, jsondoc.Number):
            integer = _as_integer(value.text)
            masked = self.text(integer)
            if masked != integer:
                return masked  # a card as parsers read the number
            if integer != value.text:
                # And as written: `3.481127826041971e+16` spells a card in its fraction for
                # anything that stores the text (a log, a search index).
                written = self.text(value.text)
                if written != value.text:
                    return written
            return value  # unchanged: still the number it was, not its digits as a string
        if depth > MAX_DEPTH:
            raise _TooDeep
        if isinstance(value, jsondoc.Members):
            return self._members(value, depth)
        if isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                self._path.append(str(index))
                items.append(self.value(item, depth + 1))
                self._path.pop()
            return items
        return value  # true, false, null

    def _members(self, members: jsondoc.Members, depth: int) -> dict[str, object]:
        result: dict[str, object] = {}
        for name, item in members:
            self._path.append(name)
            if self.credentials and is_credential_name(name) and not is_empty(item):
                self.found_credential(jsondoc.pointer(self._path))
                result[self.text(name)] = REDACTED
                self.changed = True
            else:
                result[self.text(name)] = self.value(item, depth + 1)
            self._path.pop()
        if len(result) != len(members) and (self.cards or self.credentials):
            # A repeated name: forward what was inspected, not a body that parsers may read
            # differently (first or last wins) from the way it was inspected.
            self.changed = True
        return result


def _as_integer(number: str) -> str:
    """A JSON number as the digits every parser reads it as: `4.111111111111111e15` and
    `41111111111111110e-1` are the integer 4111111111111111 to all of them (a double holds
    it exactly), so a card written that way is a card. Other numbers are left as written."""
    if "e" not in number and "E" not in number and "." not in number:
        return number
    try:
        value = Decimal(number)
    except ArithmeticError:
        return number
    if not value.is_finite() or value != value.to_integral_value() or abs(value) >= 10**19:
        return number
    digits = str(abs(int(value)))
    return digits if len(digits) >= 13 else number


class _TooDeep(Exception):
    pass


def walk_json(text: str, scan: Scan) -> object:
    """The walked document, or raises ValueError when `text` is not JSON the walk can take."""
    try:
        return scan.value(jsondoc.loads(text), 1)
    except (RecursionError, _TooDeep):
        scan.deep = True
        raise ValueError("nested too deeply") from None


def enforce(findings: tuple[str, ...], *, card_numbers: str, credentials: str) -> None:
    """Raises `ForbiddenData` for a kind found in `reject` mode, naming fields, never values."""
    if card_numbers == "reject" and CARD_FINDING in findings:
        raise ForbiddenData("the request body contains a payment card number")
    prefix = CREDENTIAL_FINDING + ":"
    fields = [finding.removeprefix(prefix) for finding in findings if finding.startswith(prefix)]
    if credentials == "reject" and fields:
        shown = ", ".join(fields[:_DETAIL_FIELDS]) + (", …" if len(fields) > _DETAIL_FIELDS else "")
        what = "a credential field" if len(fields) == 1 else "credential fields"
        raise ForbiddenData(f"the request body contains {what} ({shown})")
