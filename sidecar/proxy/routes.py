"""Pure: the route table (globs, methods, first match wins) and the scope check."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sidecar.config import Route, RouteMap
from sidecar.proxy.paths import NonCanonicalPath, PathReading

# The label used in metrics and logs for requests no configured route matched.
UNMATCHED = "(default)"


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A configured route, ready to match."""

    label: str  # the configured path glob: a bounded metrics label
    public: bool
    scopes: tuple[str, ...]
    methods: frozenset[str] | None
    map: RouteMap | None
    pattern: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        """Whether this route takes `method` on `path`."""
        if self.methods is not None and method not in self.methods:
            return False
        return self.pattern.match(path) is not None


def compile_glob(glob: str) -> re.Pattern[str]:
    """`*` matches within one segment, `**` any number of whole segments (zero included)."""
    parts = glob.strip("/").split("/") if glob != "/" else []
    regex = ""
    for index, part in enumerate(parts):
        if part == "**":
            # Zero or more segments: `/a/**` matches `/a` and `/a/b/c`.
            regex += "(?:/[^/]*)*" if index == len(parts) - 1 else "(?:/[^/]+)*"
        elif part == "*":
            regex += "/[^/]+"
        else:
            regex += "/" + "[^/]*".join(re.escape(piece) for piece in part.split("*"))
    if glob.endswith("/") and glob != "/":
        regex += "/"
    return re.compile("^" + (regex or "/") + r"\Z")  # \Z: `$` also matches before a newline


def compile_route(route: Route) -> CompiledRoute:
    """A configured route made ready for matching (its glob as a regular expression)."""
    return CompiledRoute(
        label=route.path,
        public=route.public,
        scopes=tuple(route.scopes),
        methods=frozenset(route.methods) if route.methods is not None else None,
        map=route.map,
        pattern=compile_glob(route.path),
    )


_AUTHENTICATED_DEFAULT = CompiledRoute(
    label=UNMATCHED,
    public=False,
    scopes=(),
    methods=None,
    map=None,
    pattern=re.compile(""),
)


class RouteTable:
    """Routes in configured order; `match` returns the first that fits, or the default."""

    def __init__(self, routes: Iterable[Route], default_route: str) -> None:
        self._routes = tuple(compile_route(route) for route in routes)
        self._default = _AUTHENTICATED_DEFAULT if default_route == "authenticated" else None

    def match(self, method: str, path: str) -> CompiledRoute | None:
        """The route for this request, or None when nothing matched and the default is deny."""
        for route in self._routes:
            if route.matches(method, path):
                return route
        return self._default

    def match_reading(self, method: str, reading: PathReading) -> CompiledRoute | None:
        """The route for every reading of the path; raises `NonCanonicalPath` when the
        readings select different routes (`/public/..;/admin`, `/v1/admin/` beside a
        public `/v1/**`): the sidecar would authorise one path and the upstream serve another.
        """
        route = self.match(method, reading.path)
        for other in reading.others:
            if self.match(method, other) is not route:
                raise NonCanonicalPath(
                    "the path reads as a different route once ;parameters, a second "
                    "percent-decoding or a trailing slash are taken into account"
                )
        return route


def scope_grants(granted: str, required: str) -> bool:
    """Whether one granted scope covers one required scope (`*`, `res:*`, or exact)."""
    if granted == "*" or granted == required:
        return True
    if granted.endswith(":*"):
        return required.startswith(granted[:-1])
    return False


def missing_scopes(granted: Sequence[str], required: Sequence[str]) -> list[str]:
    """The required scopes that no granted scope covers; empty means authorized."""
    return [need for need in required if not any(scope_grants(have, need) for have in granted)]
