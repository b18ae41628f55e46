"""Pure: what the command line prints is inert on a terminal, whatever a request carried.

Paths, query strings, header values and key names reach `audit tail`, `events tail`,
`audit query` and `keys list` from clients. Printed raw, a `\\n` forges a line of output and an
escape sequence (`\\x1b[2J`, `\\x9b…`) drives the operator's terminal; a bidi override
(U+202E) reorders what is shown. Every character Python does not call printable (C0, DEL and
C1 controls, line and paragraph separators, format characters such as bidi controls and
zero-width joiners, lone surrogates, unassigned code points, spaces other than U+0020) is
shown as an escape instead: `\\n`, `\\x1b`, `\\u202e`, `\\U000e0001`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A fast path: most text is plain ASCII with no control characters at all.
_PLAIN = re.compile(r"[\x20-\x7e]*")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every non-printable character escaped visibly, for text output."""
    if _PLAIN.fullmatch(text) or text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def _json_escape_char(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, the only way JSON spells such a character
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(document: Any) -> str:
    """`document` as one line of JSON, readable (non-ASCII text kept) yet inert: JSON escapes
    only C0 controls by itself, so DEL, C1, bidi controls and the like are escaped here.
    They only ever occur inside strings, where a `\\u` escape of four hex digits means the
    same character."""
    text = json.dumps(document, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _json_escape_char(char) for char in text)
