"""Pure: payment card numbers in text (SPEC §7): find them, mask them.

A card number is 13-19 ASCII digits that pass the Luhn check, written either as one run of digits
or grouped with single spaces or dashes ("4111 1111 1111 1111", "3782 822463 10005"). Digits that
belong to a longer run are not a card: a 20-digit order number is left alone, and so is any part of
it. In a grouped number every group but the last has at least three digits, as every card
network prints them: lists of small numbers ("1 2 3 4 ...", "1 800 555 0199 1") are not cards,
and a body full of them cannot make the search slow. Masking keeps the separators and the last
four digits, which is what receipts print.

Cost (the guard's bound, SPEC §14): one left-to-right pass, linear in the text. A run of digit
groups is read in blocks of `_BLOCK` groups, so the memory the scan needs on top of the text and
its masked copy is constant however long the run is (a 1 MiB body of digit groups used to build
~140 MB of prefix sums at once). Each group is tried as the start of a card against at most
`CARD_MAX_DIGITS` following digits, and Luhn checks are constant-time prefix-sum lookups.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from itertools import accumulate

CARD_MIN_DIGITS = 13
CARD_MAX_DIGITS = 19
KEPT_DIGITS = 4
MIN_INNER_GROUP = 3
MASK = "*"

# Digits and single separators: the groups a card may be written in. The run is maximal, so a
# candidate never starts or ends inside a digit group. Possessive (`*+`): the same match, but
# the regex engine keeps no backtracking state per group (25 MB for a 1 MiB run otherwise).
_GROUPED_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*+")
_GROUP = re.compile(r"[0-9]+")
# A cheap first look: thirteen digits with at most single separators between them.
_LONG_ENOUGH = re.compile(r"[0-9](?:[ -]?[0-9]){12}")
# Groups scanned at once, and the groups past a block a card starting in it may reach (every
# group has a digit at least, so no card spans more than CARD_MAX_DIGITS groups).
_BLOCK = 256
_LOOKAHEAD = CARD_MAX_DIGITS + 1
_TO_MASK = str.maketrans("0123456789", MASK * 10)

# A superset test for the fast path: every card `card_spans` finds lies in a run of digits,
# spaces and dashes, 13 characters long at least, that holds 13 digits at least. One greedy
# pattern with no nested repetition: it does not backtrack at every digit. ASCII digits only,
# as `card_spans` reads them: twice as fast as Unicode `\d` (the check runs on every body).
_DIGIT_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")

Group = tuple[int, int]  # (start, end) of a group of digits in the text
Card = tuple[int, int, int]  # (start, end, start of the digits a mask keeps)


def might_hold_cards(text: str) -> bool:
    """False only when `text` cannot hold a card number: lets the guard skip the scan."""
    for run in _DIGIT_RUN.finditer(text):
        found = run.group()
        # The run is digits, spaces and dashes only: counting the separators (in C) counts
        # the digits, instead of a Python-level loop over every character of a long run.
        if len(found) - found.count(" ") - found.count("-") >= CARD_MIN_DIGITS:
            return True
    return False


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
    return [(start, end) for start, end, _keep in _cards(text, rescan_kept=False)]


def mask_cards(text: str) -> tuple[str, bool]:
    """`text` with every card number masked, and whether there was any.

    The four digits a mask keeps could, with the digit groups after them, spell another
    Luhn-valid number, and the output must hold none: after each card the scan goes on from
    those kept digits, as a second pass over the masked text would, but in the same pass (a
    repeat-until-clean loop was quadratic on a body built so that each pass found one more).
    """
    cards = list(_cards(text, rescan_kept=True))
    if not cards:
        return text, False
    pieces: list[str] = []
    position = 0
    for start, _end, keep in cards:
        # A card found from the kept digits of the previous one starts at or after `keep`.
        pieces.append(text[position:start])
        pieces.append(text[start:keep].translate(_TO_MASK))
        position = keep
    pieces.append(text[position:])
    return "".join(pieces), True


def _cards(text: str, *, rescan_kept: bool) -> Iterator[Card]:
    if _LONG_ENOUGH.search(text) is None:
        return
    for run in _GROUPED_RUN.finditer(text):
        if run.end() - run.start() >= CARD_MIN_DIGITS:
            yield from _cards_in_run(text, run.start(), run.end(), rescan_kept)


def _cards_in_run(text: str, start: int, end: int, rescan_kept: bool) -> Iterator[Card]:
    pending: list[Group] = []
    for match in _GROUP.finditer(text, start, end):
        group = match.span()
        if group[1] - group[0] > CARD_MAX_DIGITS:
            # No card can hold a group this long: it splits the run in two.
            yield from _scan_groups(text, pending, rescan_kept, final=True)
            pending = []
        else:
            pending.append(group)
            if len(pending) >= _BLOCK + _LOOKAHEAD:
                pending = yield from _scan_groups(text, pending, rescan_kept, final=False)
    yield from _scan_groups(text, pending, rescan_kept, final=True)


def _scan_groups(
    text: str, groups: list[Group], rescan_kept: bool, *, final: bool
) -> Generator[Card, None, list[Group]]:
    """Cards starting in `groups` (all of them when `final`, else all but the lookahead);
    returns the groups still to scan, the first of them maybe shortened to kept digits."""
    if not groups:
        return groups
    offsets = list(
        accumulate((group_end - group_start for group_start, group_end in groups), initial=0)
    )
    digits = "".join(text[group_start:group_end] for group_start, group_end in groups)
    sums = _LuhnSums(digits)
    even, odd = sums.tables()
    count = len(groups)
    limit = count if final else count - _LOOKAHEAD
    first = 0
    while first < limit:
        # The hot loop of an adversarial body: locals and inlined Luhn lookups, no calls.
        base = offsets[first]
        last = -1
        index = first
        while index < count:
            stop = offsets[index + 1]
            digits_in = stop - base
            if digits_in > CARD_MAX_DIGITS:
                break
            if digits_in >= CARD_MIN_DIGITS:
                table = even if stop % 2 else odd
                if (table[stop] - table[base]) % 10 == 0:
                    last = index  # keep going: the longest card wins
            if stop - offsets[index] < MIN_INNER_GROUP:
                break  # a short group can only end a number
            index += 1
        if last < 0:
            first += 1
            continue
        # The kept digits: the last KEPT_DIGITS of the card, in the card's final group(s).
        end_digit = offsets[last + 1]
        kept = last
        while end_digit - offsets[kept] < KEPT_DIGITS:
            kept -= 1
        keep = groups[kept][1] - (KEPT_DIGITS - (end_digit - offsets[kept + 1]))
        yield groups[first][0], groups[last][1], keep
        if not rescan_kept:
            first = last + 1
            continue
        # Masked, the card leaves only those digits: a new run starts there, so scan on from
        # them (shortening their first group). Every card found masks nine digits at least,
        # so this ends.
        groups[kept] = (keep, groups[kept][1])
        offsets[kept] = end_digit - KEPT_DIGITS
        first = kept
    return groups[first:]


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

    def tables(self) -> tuple[list[int], list[int]]:
        """(even_plain, odd_plain): `valid` for callers that inline it in a hot loop."""
        return self._even_plain, self._odd_plain

    def valid(self, start: int, end: int) -> bool:
        # Luhn leaves the last digit as is and doubles every second one to its left.
        sums = self._even_plain if (end - 1) % 2 == 0 else self._odd_plain
        return (sums[end] - sums[start]) % 10 == 0


_NON_ZERO = re.compile(rb"[^\0]+")


def mask_cards_in_bytes(data: bytes) -> tuple[bytes, bool]:
    """Card numbers written as ASCII digits anywhere in `data`, masked byte for byte.

    For bytes the guard cannot read as text (binary, or an encoding it decoded but that a
    recipient might read differently): the bytes as Latin-1, then the bytes with every zero
    byte ignored, which is how UTF-16 and UTF-32 (either order, any alignment) write ASCII
    digits. Both passes are linear; the second runs only when there are zero bytes.
    """
    masked, found = mask_cards(data.decode("latin-1"))
    out = masked.encode("latin-1") if found else data
    if b"\0" not in out:
        return out, found
    narrow = out.replace(b"\0", b"")
    cards = list(_cards(narrow.decode("latin-1"), rescan_kept=True))
    if not cards:
        return out, found
    # Map positions in `narrow` back to `out`: the k-th non-zero byte, walking both in order.
    buffer = bytearray(out)
    segments = _NON_ZERO.finditer(out)
    segment = next(segments)
    seen = 0  # non-zero bytes before `segment`
    for start, _end, keep in cards:
        for position in range(start, keep):
            if not 48 <= narrow[position] <= 57:
                continue
            while position >= seen + segment.end() - segment.start():
                seen += segment.end() - segment.start()
                segment = next(segments)
            buffer[segment.start() + position - seen] = 42  # "*"
    return bytes(buffer), True
