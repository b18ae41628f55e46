"""Pure: JSON documents as the data guard sees them, and route `map` rules (RFC 6901 pointers).

Parsing keeps what a plain `json.loads` would lose and the guard must not: number literals stay
as written (a card number written as a JSON number is found, and no float is reformatted), and
objects arrive as their full list of members, so a repeated name is inspected too instead of
being silently dropped by the parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from sidecar.config import RouteMap

# `~` is an escape only as `~0` or `~1` (RFC 6901 §3).
_BAD_ESCAPE = re.compile(r"~(?![01])")


class Number:
    """A JSON number exactly as written in the body."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Number) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Number({self.text!r})"


class Members(list[tuple[str, object]]):
    """An object's members in body order, repeated names included (before the guard's walk)."""


def loads(text: str) -> object:
    """Parse a JSON text into str, Number, Members, list, bool and None values.

    Raises ValueError for anything that is not JSON and RecursionError for absurd nesting.
    """
    return json.loads(
        text,
        object_pairs_hook=_members,
        parse_int=Number,
        parse_float=Number,
        parse_constant=Number,
    )


def _members(pairs: Iterable[tuple[str, object]]) -> Members:
    return Members(pairs)


def dumps(document: object) -> bytes:
    """Compact UTF-8 JSON, as `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes.

    A string holding a lone surrogate (legal as a `\\ud800` escape, not encodable in UTF-8)
    makes the whole document fall back to ASCII escapes rather than fail.
    """
    try:
        return _serialise(document, ascii_only=False).encode("utf-8")
    except UnicodeEncodeError:
        return _serialise(document, ascii_only=True).encode("ascii")


def _serialise(document: object, *, ascii_only: bool) -> str:
    out: list[str] = []
    _emit(document, out, ascii_only)
    return "".join(out)


def _emit(value: object, out: list[str], ascii_only: bool) -> None:
    if isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=ascii_only))
    elif isinstance(value, Number):
        out.append(value.text)
    elif value is None or isinstance(value, bool):
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=ascii_only))
            out.append(":")
            _emit(item, out, ascii_only)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _emit(item, out, ascii_only)
        out.append("]")
    else:  # pragma: no cover - the parser produces nothing else
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def escape_token(token: str) -> str:
    """One reference token of a JSON Pointer, escaped (RFC 6901 §3)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(tokens: Iterable[str]) -> str:
    """The JSON Pointer (RFC 6901) of these reference tokens."""
    return "".join("/" + escape_token(token) for token in tokens)


def parse_pointer(text: str) -> list[str] | None:
    """The reference tokens of a JSON Pointer, or None when it is not one."""
    if not text.startswith("/"):
        return None
    tokens = []
    for raw in text[1:].split("/"):
        if _BAD_ESCAPE.search(raw):
            return None
        # `~01` is the token `~1`: unescape `~1` first (RFC 6901 §4).
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tokens


def apply_route_map(document: object, route_map: RouteMap) -> bool:
    """Apply `drop` then `rename` to a walked document in place; whether anything changed.

    Pointers that lead nowhere are ignored: a map describes what to do with a field when it is
    there. A rename is a JSON Patch `move` (RFC 6902 §4.4): missing objects on the target's way
    are created, a target that exists is replaced, and a move into the value's own inside or onto
    something that cannot hold it leaves the document as it was.
    """
    changed = False
    for text in route_map.drop:
        tokens = parse_pointer(text)
        if tokens is not None and _remove(document, tokens) is not _MISSING:
            changed = True
    for source_text, target_text in route_map.rename.items():
        source, target = parse_pointer(source_text), parse_pointer(target_text)
        if source is None or target is None or source == target:
            continue
        if target[: len(source)] == source:
            continue  # into its own inside
        if _move(document, source, target):
            changed = True
    return changed


class _Missing:
    pass


_MISSING = _Missing()


def _index(reference: str, length: int, *, allow_end: bool) -> int | None:
    """An array index per RFC 6901 (no sign, no leading zero), within bounds, or None."""
    if reference == "-":
        return length if allow_end else None
    if not reference.isascii() or not reference.isdigit() or len(reference) > 18:
        return None
    if len(reference) > 1 and reference[0] == "0":
        return None
    index = int(reference)
    limit = length if allow_end else length - 1
    return index if index <= limit else None


def _parent(document: object, tokens: list[str]) -> object:
    """The container holding the pointer's last token, or _MISSING."""
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                return _MISSING
            node = node[token]
        elif isinstance(node, list):
            index = _index(token, len(node), allow_end=False)
            if index is None:
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def _remove(document: object, tokens: list[str]) -> object:
    """Remove and return the value the pointer names, or _MISSING."""
    parent = _parent(document, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        index = _index(last, len(parent), allow_end=False)
        if index is not None:
            return parent.pop(index)
    return _MISSING


def _move(document: object, source: list[str], target: list[str]) -> bool:
    parent = _parent(document, source)
    position: int | None
    if isinstance(parent, dict):
        if source[-1] not in parent:
            return False
        position = list(parent).index(source[-1])
        value = parent.pop(source[-1])
    elif isinstance(parent, list):
        position = _index(source[-1], len(parent), allow_end=False)
        if position is None:
            return False
        value = parent.pop(position)
    else:
        return False
    if _place(document, target, value):
        return True
    # The target cannot take it: put the value back exactly where it was.
    if isinstance(parent, dict):
        items = list(parent.items())
        items.insert(position, (source[-1], value))
        parent.clear()
        parent.update(items)
    else:
        parent.insert(position, value)
    return False


def _place(document: object, tokens: list[str], value: object) -> bool:
    if not _placeable(document, tokens):
        return False
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(token, {})
        else:
            assert isinstance(node, list)
            index = _index(token, len(node), allow_end=False)
            assert index is not None
            node = node[index]
    if isinstance(node, dict):
        node[tokens[-1]] = value
    else:
        assert isinstance(node, list)
        index = _index(tokens[-1], len(node), allow_end=True)
        assert index is not None
        node.insert(index, value)
    return True


def _placeable(document: object, tokens: list[str]) -> bool:
    """Whether `_place` can put a value at the pointer (creating missing objects on the way)."""
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                return True  # the rest of the way is created as objects
            node = node[token]
        elif isinstance(node, list):
            index = _index(token, len(node), allow_end=False)
            if index is None:
                return False
            node = node[index]
        else:
            return False
    if isinstance(node, dict):
        return True
    if isinstance(node, list):
        return _index(tokens[-1], len(node), allow_end=True) is not None
    return False
