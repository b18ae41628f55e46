"""Pure: payment card numbers in text (SPEC §7): find them, mask them.

A card number is 13-19 ASCII digits that pass the Luhn check, written either as one run of digits
or grouped with single spaces or dashes ("4111 1111 1111 1111", "4111-1111-1111-1111"). Digits that
belong to a longer run are not a card: a 20-digit order number is left alone, and so is any part of
it. Masking keeps the separators and the last four digits, which is what receipts print.
"""

from __future__ import annotations

import re

CARD_MIN_DIGITS = 13
CARD_MAX_DIGITS = 19
KEPT_DIGITS = 4
MASK = "*"

# Digits and single separators: the groups a card may be written in. The run is maximal, so a
# candidate never starts or ends inside a digit group.
_GROUPED_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
# A cheap first look: thirteen digits with at most single separators between them.
_LONG_ENOUGH = re.compile(r"[0-9](?:[ -]?[0-9]){12}")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of ASCII digits."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each card number in `text`, left to right, not overlapping.

    Within a run of digit groups the longest card starting at the earliest group wins, so a
    card glued to other numbers by a separator ("order 12 4111 1111 1111 1111") is still found.
    """
    spans: list[tuple[int, int]] = []
    if _LONG_ENOUGH.search(text) is None:
        return spans
    for run in _GROUPED_RUN.finditer(text):
        if run.end() - run.start() < CARD_MIN_DIGITS:
            continue
        groups = [(m.start(), m.end()) for m in _GROUP.finditer(text, run.start(), run.end())]
        first = 0
        while first < len(groups):
            last = _longest_card(text, groups, first)
            if last is None:
                first += 1
                continue
            spans.append((groups[first][0], groups[last][1]))
            first = last + 1
    return spans


def _longest_card(text: str, groups: list[tuple[int, int]], first: int) -> int | None:
    """The last group of the longest card that starts at group `first`, if any."""
    digits = ""
    candidates: list[tuple[int, str]] = []
    for index in range(first, len(groups)):
        start, end = groups[index]
        digits += text[start:end]
        if len(digits) > CARD_MAX_DIGITS:
            break
        if len(digits) >= CARD_MIN_DIGITS:
            candidates.append((index, digits))
    for index, candidate in reversed(candidates):
        if luhn_valid(candidate):
            return index
    return None


def mask_cards(text: str) -> tuple[str, bool]:
    """`text` with every card number masked, and whether there was any.

    Masking repeats until nothing is found: the four digits a mask keeps could, with the digit
    groups after them, spell another Luhn-valid number, and the output must hold none.
    """
    found = False
    while spans := card_spans(text):
        found = True
        text = _apply_masks(text, spans)
    return text, found


def _apply_masks(text: str, spans: list[tuple[int, int]]) -> str:
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        pieces.append(text[position:start])
        pieces.append(mask_number(text[start:end]))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def mask_number(number: str) -> str:
    """Every digit but the last four replaced by '*'; separators and everything else kept."""
    remaining = sum("0" <= char <= "9" for char in number)
    masked = []
    for char in number:
        if "0" <= char <= "9":
            masked.append(char if remaining <= KEPT_DIGITS else MASK)
            remaining -= 1
        else:
            masked.append(char)
    return "".join(masked)
