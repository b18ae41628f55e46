"""Pure: payment card numbers in text (SPEC §7): find them, mask them.

A card number is 13-19 ASCII digits that pass the Luhn check, written either as one run of digits
or grouped with single spaces or dashes ("4111 1111 1111 1111", "3782 822463 10005"). Digits that
belong to a longer run are not a card: a 20-digit order number is left alone, and so is any part of
it. In a grouped number every group but the last has at least three digits, as every card
network prints them: lists of small numbers ("1 2 3 4 ...", "1 800 555 0199 1") are not cards,
and a body full of them cannot make the search slow. Masking keeps the separators and the last
four digits, which is what receipts print.
"""

from __future__ import annotations

import re
from itertools import accumulate

CARD_MIN_DIGITS = 13
CARD_MAX_DIGITS = 19
KEPT_DIGITS = 4
MIN_INNER_GROUP = 3
MASK = "*"

# Digits and single separators: the groups a card may be written in. The run is maximal, so a
# candidate never starts or ends inside a digit group.
_GROUPED_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
# A cheap first look: thirteen digits with at most single separators between them.
_LONG_ENOUGH = re.compile(r"[0-9](?:[ -]?[0-9]){12}")


# A superset test for the fast path: every card `card_spans` finds lies in a run of digits,
# spaces and dashes, 13 characters long at least, that holds 13 digits at least. One greedy
# pattern with no nested repetition: it does not backtrack at every digit.
_DIGIT_RUN = re.compile(r"\d[\d -]{11,}\d")


def might_hold_cards(text: str) -> bool:
    """False only when `text` cannot hold a card number: lets the guard skip the scan."""
    return any(
        sum(char.isdigit() for char in run.group()) >= 13 for run in _DIGIT_RUN.finditer(text)
    )


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
        if run.end() - run.start() >= CARD_MIN_DIGITS:
            spans.extend(_cards_in_run(text, run.start(), run.end()))
    return spans


def _cards_in_run(text: str, start: int, end: int) -> list[tuple[int, int]]:
    groups = [(match.start(), match.end()) for match in _GROUP.finditer(text, start, end)]
    digits = "".join(text[group_start:group_end] for group_start, group_end in groups)
    sums = _LuhnSums(digits)
    offsets = list(
        accumulate((group_end - group_start for group_start, group_end in groups), initial=0)
    )
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(groups):
        last = None
        for index in range(first, len(groups)):
            count = offsets[index + 1] - offsets[first]
            if count > CARD_MAX_DIGITS:
                break
            if count >= CARD_MIN_DIGITS and sums.valid(offsets[first], offsets[index + 1]):
                last = index  # keep going: the longest card wins
            if offsets[index + 1] - offsets[index] < MIN_INNER_GROUP:
                break  # a short group can only end a number
        if last is None:
            first += 1
        else:
            spans.append((groups[first][0], groups[last][1]))
            first = last + 1
    return spans


_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


class _LuhnSums:
    """Prefix sums over a digit string: the Luhn check of any slice in constant time."""

    __slots__ = ("_even_plain", "_odd_plain")

    def __init__(self, digits: str) -> None:
        raw = digits.encode("ascii")
        plain, doubled = raw.translate(_PLAIN), raw.translate(_DOUBLED)
        even_plain = bytearray(doubled)  # even positions as is, odd ones doubled
        even_plain[0::2] = plain[0::2]
        odd_plain = bytearray(plain)
        odd_plain[0::2] = doubled[0::2]
        self._even_plain = list(accumulate(even_plain, initial=0))
        self._odd_plain = list(accumulate(odd_plain, initial=0))

    def valid(self, start: int, end: int) -> bool:
        # Luhn leaves the last digit as is and doubles every second one to its left.
        sums = self._even_plain if (end - 1) % 2 == 0 else self._odd_plain
        return (sums[end] - sums[start]) % 10 == 0


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
