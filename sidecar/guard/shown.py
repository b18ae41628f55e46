"""Pure: request text shown outside the body fields: in the record's path and headers, in events,
in log lines (SPEC §17: "exactly as the audit record does").

One masking, `masked`, for the path and header values wherever they go, so the record, the event
and the log line of one request show the same text: key secrets masked (`mask_keys`), then card
numbers (`mask_cards`, unless the data guard's `card_numbers` is off). Keys first: a key's secret
may hold a Luhn-valid run of digits, and a card mask would leave the rest of it unmatched by the
key shape. `shown` masks before it bounds, so a cut can never split a card into an unmasked
prefix. Nothing is escaped here: the log renderer escapes control characters, and the record
and the event are JSON.
"""

from __future__ import annotations

from sidecar.guard.cards import mask_cards, might_hold_cards
from sidecar.guard.keyshapes import mask_keys, might_hold_keys

# Events and records of requests nobody authenticated: what one of them stores is bounded.
SHOWN_CHARS = 1024
# A client's header value (Content-Type, Content-Encoding…) quoted in a log line.
HEADER_SHOWN_CHARS = 64


def bounded(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


def might_need_masking(text: str, *, cards: bool = True) -> bool:
    """False only when `masked(text)` is `text` itself: the cheap looks of both masks."""
    return might_hold_keys(text) or (cards and might_hold_cards(text))


def masked(text: str, *, cards: bool = True) -> str:
    """`text` with every key secret and (when `cards`) every card number masked, as the audit
    record masks its path and header values."""
    text = mask_keys(text)
    if cards and might_hold_cards(text):
        text = mask_cards(text)[0]
    return text


def shown(text: str, limit: int = SHOWN_CHARS, *, cards: bool = True) -> str:
    """`text` fit to be shown outside the record: `masked`, then `bounded` to `limit`."""
    return bounded(masked(text, cards=cards), limit)


def shown_header(value: str, *, cards: bool = True) -> str:
    """A client's header value quoted in a log line or a refusal: masked, at most
    `HEADER_SHOWN_CHARS` characters (plus the note of what was cut)."""
    return shown(value, HEADER_SHOWN_CHARS, cards=cards)
