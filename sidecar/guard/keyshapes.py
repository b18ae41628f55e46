"""Pure: strings shaped like this product's API keys, found and masked wherever they turn up.

The shape is `{prefix}_{environment}_{id}_{secret}{checksum}`; the lengths live here so the
key format (`sidecar.keys.format`) and every place that must never hold a key — a URL, a
form, an audit record, a log line — agree on what a key looks like.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

ID_BYTES, ID_CHARS = 12, 17  # 62**17 > 2**96
SECRET_BYTES, SECRET_CHARS = 32, 43  # 62**43 > 2**256
CHECKSUM_CHARS = 6  # 62**6 > 2**32

# Anything that looks like a key, for finding keys where they must not be.
KEY_PATTERN = re.compile(
    rf"[a-z][a-z0-9]{{0,15}}_[a-z0-9]{{1,16}}_[0-9A-Za-z]{{{ID_CHARS}}}"
    rf"_[0-9A-Za-z]{{{SECRET_CHARS + CHECKSUM_CHARS}}}"
)
_KEY_PARTS = re.compile(
    rf"([a-z][a-z0-9]{{0,15}}_[a-z0-9]{{1,16}}_[0-9A-Za-z]{{{ID_CHARS}}}_)"
    rf"[0-9A-Za-z]{{{SECRET_CHARS + CHECKSUM_CHARS}}}"
)
# The id and secret of a key start with a literal `_`, which the regex engine finds at memchr
# speed; the full shape (its prefix a run of letters) costs ~30 µs per KiB of text, so it is
# only tried where this cheap test says a key may be.
_TAIL = re.compile(rf"_[0-9A-Za-z]{{{ID_CHARS}}}_[0-9A-Za-z]{{{SECRET_CHARS + CHECKSUM_CHARS}}}")
MASKED_SECRET = "[REDACTED]"  # noqa: S105 (a mask, not a password)


def might_hold_keys(text: str) -> bool:
    """False only when `text` holds no key-shaped string (the cheap look `mask_keys` takes)."""
    return _TAIL.search(text) is not None


def mask_keys(text: str) -> str:
    """`text` with the secret of every key-shaped string in it masked; the public parts
    (prefix, environment, id) stay, so an operator can still tell which key it was."""
    if not might_hold_keys(text):
        return text
    return _KEY_PARTS.sub(lambda match: match.group(1) + MASKED_SECRET, text)


def find_key(text: str) -> str | None:
    """The first key-shaped string in `text`, also when it is percent-encoded once or twice
    (`sk%5Flive%5F…`: cookies, forms and query strings are decoded by the upstream)."""
    for _ in range(3):
        found = KEY_PATTERN.search(text) if _TAIL.search(text) is not None else None
        if found is not None:
            return found.group(0)
        if "%" not in text:
            return None
        text = unquote(text, errors="replace")
    return None
