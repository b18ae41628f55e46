"""Pure: one reading of a request path, or the reason it has none (SPEC §14).

Routes are matched on the decoded path while the upstream receives the raw one, and
upstreams do not all decode alike: Tomcat and Spring remove `;parameters` from each segment
before they resolve `..` (so `/public/..;/admin` is `/admin` to them), some servers and
frameworks percent-decode twice (`%252e%252e` is `..` to them), some ignore a trailing
slash, some match paths without regard to case (IIS, Express, ASP.NET Core), and some ignore
a `.format` suffix (Rails, older Spring MVC) or whitespace around a segment (older Spring).
`read_path` computes every such reading of the path. A path is accepted only when
none of the readings holds a dot segment, an empty segment, or an encoded separator, and the
caller then checks that all readings select the same route: a path that means one thing to
the sidecar and another to the upstream is refused, not normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote


class NonCanonicalPath(ValueError):
    """The path can be read in ways that differ; the message says how, never echoes it."""


@dataclass(frozen=True, slots=True)
class PathReading:
    """The decoded path routes match (`path`), and every other reading an upstream may have."""

    path: str
    others: tuple[str, ...]  # distinct from `path` and from each other; usually empty


_SEPARATORS = ("/", "\\", "\x00")
# Lower-case segments of unreserved characters, no dot, no trailing slash: a path with exactly
# one reading, the one most requests have. Anything else takes the long way.
_PLAIN_PATH = re.compile(r"(?:/[a-z0-9_~!$&'()*+,=:@-]+)+|/")


def _decode(segment: str) -> str:
    if "%" not in segment:
        return segment
    try:
        decoded = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise NonCanonicalPath("the path is not percent-encoded UTF-8") from None
    if any(separator in decoded for separator in _SEPARATORS):
        raise NonCanonicalPath("encoded slashes, back-slashes or NUL are not allowed in the path")
    return decoded


def _without_parameters(segment: str) -> str:
    return segment.split(";", 1)[0]


def _check(segments: list[str]) -> None:
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise NonCanonicalPath("dot segments are not allowed in the path")
        if segment == "" and index < len(segments) - 1:
            raise NonCanonicalPath("empty segments are not allowed in the path")
        if "\\" in segment or not segment.isprintable():
            # Control characters have no use in a path and many ways to be misread.
            raise NonCanonicalPath("back-slashes and control characters are not allowed here")


def _router_readings(path: str) -> list[str]:
    """How routers that are lenient about a path's spelling may read it."""
    readings = [path.lower()]  # case-insensitive matching
    segments = path.split("/")
    last = segments[-1]
    if "." in last.lstrip("."):
        # `(.:format)`: `/admin.json` served as `/admin`
        readings.append("/".join([*segments[:-1], last[: last.index(".", 1)]]))
    if any(segment != segment.strip() for segment in segments):
        readings.append("/".join(segment.strip() for segment in segments))
    return [reading for reading in readings if reading != path]


def read_path(raw_path: str) -> PathReading:
    """Every reading of `raw_path` (as sent, still percent-encoded) that an upstream may have.

    Raises `NonCanonicalPath` when any reading has dot or empty segments, encoded or
    back-slashes, NUL, or bytes that are not UTF-8.
    """
    if _PLAIN_PATH.fullmatch(raw_path) is not None:
        return PathReading(raw_path, ())
    if not raw_path.startswith("/"):
        raise NonCanonicalPath("the request target must be an absolute path")
    raw = raw_path[1:].split("/")
    _check(raw)
    once = [_decode(segment) for segment in raw]
    _check(once)
    readings = ["/" + "/".join(once)]
    if ";" in raw_path or any(";" in segment for segment in once):
        # Parameters removed before decoding (Tomcat) and after (servers that decode first).
        for segments in (
            [_decode(_without_parameters(segment)) for segment in raw],
            [_without_parameters(segment) for segment in once],
        ):
            _check(segments)
            readings.append("/" + "/".join(segments))
    if any("%" in segment for segment in once):
        # Decoded twice, by an upstream that decodes what it was given once more.
        twice = [_decode(segment) for segment in once]
        _check(twice)
        stripped = [_without_parameters(segment) for segment in twice]
        _check(stripped)
        readings += ["/" + "/".join(twice), "/" + "/".join(stripped)]
    for reading in list(readings):
        if len(reading) > 1 and reading.endswith("/"):
            readings.append(reading.rstrip("/"))  # frameworks that match `/a/` as `/a`
    for reading in list(readings):
        readings += _router_readings(reading)

    primary = readings[0]
    others = tuple(dict.fromkeys(reading for reading in readings[1:] if reading != primary))
    return PathReading(primary, others)
