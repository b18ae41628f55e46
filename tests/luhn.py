"""An oracle for card numbers, written apart from `sidecar.guard.cards`: the Luhn check digit,
and the Luhn-valid numbers a text holds, so the guard's tests do not grade it by its own rule."""

from __future__ import annotations

import re


def luhn_number(prefix: str) -> str:
    """`prefix` plus the check digit that makes it Luhn-valid (independent of the code)."""
    for check in "0123456789":
        candidate = prefix + check
        doubled = "".join(
            str(int(digit) * (2 if index % 2 else 1))
            for index, digit in enumerate(reversed(candidate))
        )
        if sum(int(digit) for digit in doubled) % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def luhn_windows(text: str) -> list[str]:
    """Every 13-19 digit Luhn-valid number in `text`: one run of digits, or whole groups joined by
    single spaces/dashes where each group but the last has at least three digits."""
    found = []
    for run in re.finditer(r"[0-9]+(?:[ -][0-9]+)*", text):
        groups = re.findall(r"[0-9]+", run.group())
        for first in range(len(groups)):
            for last in range(first, len(groups)):
                if any(len(group) < 3 for group in groups[first:last]):
                    break
                digits = "".join(groups[first : last + 1])
                if 13 <= len(digits) <= 19 and luhn_number(digits[:-1]) == digits:
                    found.append(digits)
    return found


def luhn_runs(text: str) -> list[str]:
    """Every maximal run of 13-19 digits (no separators) that is Luhn-valid."""
    return [
        run
        for run in re.findall(r"[0-9]+", text)
        if 13 <= len(run) <= 19 and luhn_number(run[:-1]) == run
    ]
