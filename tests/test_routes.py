"""Plain and property tests of the pure module `sidecar.proxy.routes`: globs, the route table,
scopes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import Route
from sidecar.proxy.paths import NonCanonicalPath, read_path
from sidecar.proxy.routes import (
    UNMATCHED,
    RouteTable,
    compile_glob,
    missing_scopes,
    scope_grants,
)

# sidecar.proxy.routes: globs


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("/status", "/status", True),
        ("/status", "/status/", False),
        ("/status", "/statusx", False),
        ("/status", "/status/x", False),
        ("/", "/", True),
        ("/", "/x", False),
        # `*`: exactly one non-empty segment
        ("/v1/orders/*", "/v1/orders/42", True),
        ("/v1/orders/*", "/v1/orders", False),
        ("/v1/orders/*", "/v1/orders/", False),
        ("/v1/orders/*", "/v1/orders/42/items", False),
        ("/v1/*/items", "/v1/orders/items", True),
        ("/v1/*/items", "/v1/items", False),
        ("/v1/*/items", "/v1/a/b/items", False),
        # `*` inside a segment stays inside it
        ("/files/*.json", "/files/a.json", True),
        ("/files/*.json", "/files/a/b.json", False),
        ("/files/*.json", "/files/a.jsonx", False),
        # `**`: any depth, zero included
        ("/v1/orders/**", "/v1/orders", True),
        ("/v1/orders/**", "/v1/orders/", True),
        ("/v1/orders/**", "/v1/orders/42", True),
        ("/v1/orders/**", "/v1/orders/42/items/7", True),
        ("/v1/orders/**", "/v1/ordersx", False),
        ("/v1/orders/**", "/v1/order", False),
        ("/v1/orders/**", "/v1", False),
        ("/v1/**/items", "/v1/items", True),
        ("/v1/**/items", "/v1/a/items", True),
        ("/v1/**/items", "/v1/a/b/c/items", True),
        ("/v1/**/items", "/v1/a/items/x", False),
        ("/**", "/", True),
        ("/**", "/anything/at/all", True),
        # regex metacharacters in literals are literal
        ("/a.b", "/a.b", True),
        ("/a.b", "/axb", False),
        ("/v1/(x)", "/v1/(x)", True),
    ],
)
def test_compile_glob(glob: str, path: str, matches: bool) -> None:
    assert (compile_glob(glob).match(path) is not None) is matches


# sidecar.proxy.routes: the route table


def table(default_route: str = "deny") -> RouteTable:
    routes = [
        Route(path="/v1/orders/**", methods=["GET", "HEAD"], scopes=["orders:read"]),
        Route(path="/v1/orders/**", methods=["POST", "DELETE"], scopes=["orders:write"]),
        Route(path="/v1/**", scopes=["admin:all"]),
        Route(path="/status", public=True),
    ]
    return RouteTable(routes, default_route)


@pytest.mark.parametrize(
    ("method", "path", "label", "scopes"),
    [
        ("GET", "/v1/orders/1", "/v1/orders/**", ("orders:read",)),
        ("HEAD", "/v1/orders", "/v1/orders/**", ("orders:read",)),
        ("POST", "/v1/orders", "/v1/orders/**", ("orders:write",)),
        ("DELETE", "/v1/orders/1", "/v1/orders/**", ("orders:write",)),
        # a method neither orders route lists falls through to the next match
        ("PUT", "/v1/orders/1", "/v1/**", ("admin:all",)),
        ("GET", "/v1/customers", "/v1/**", ("admin:all",)),
    ],
)
def test_route_table_first_match_wins(
    method: str, path: str, label: str, scopes: tuple[str, ...]
) -> None:
    route = table().match(method, path)
    assert route is not None
    assert (route.label, route.scopes, route.public) == (label, scopes, False)


def test_route_table_public_route() -> None:
    route = table().match("GET", "/status")
    assert route is not None
    assert route.public
    assert route.scopes == ()


def test_route_without_methods_takes_every_method() -> None:
    for method in ("GET", "POST", "PATCH", "OPTIONS"):
        route = table().match(method, "/status")
        assert route is not None, method


def test_default_route_deny_matches_nothing() -> None:
    assert table("deny").match("GET", "/elsewhere") is None


def test_default_route_authenticated_needs_a_key_and_no_scope() -> None:
    route = table("authenticated").match("GET", "/elsewhere")
    assert route is not None
    assert route.label == UNMATCHED
    assert not route.public
    assert route.scopes == ()


def test_configured_routes_still_win_over_the_authenticated_default() -> None:
    route = table("authenticated").match("GET", "/v1/orders/1")
    assert route is not None
    assert route.label == "/v1/orders/**"


# sidecar.proxy.routes: scopes


@pytest.mark.parametrize(
    ("granted", "required", "missing"),
    [
        (["orders:read"], ["orders:read"], []),
        (["orders:read"], ["orders:write"], ["orders:write"]),
        (["orders:*"], ["orders:read", "orders:write"], []),
        (["orders:*"], ["customers:read"], ["customers:read"]),
        (["orders:*"], ["ordersx:read"], ["ordersx:read"]),  # a prefix is not a resource
        (["*"], ["orders:read", "customers:write"], []),
        ([], ["orders:read"], ["orders:read"]),
        ([], [], []),
        (["orders:read"], [], []),
        (["orders:read"], ["orders:read", "orders:write"], ["orders:write"]),
        (["orders:read", "customers:*"], ["customers:write", "orders:read"], []),
        (["orders:read:x"], ["orders:read"], ["orders:read"]),
    ],
)
def test_missing_scopes(granted: list[str], required: list[str], missing: list[str]) -> None:
    assert missing_scopes(granted, required) == missing


@pytest.mark.parametrize(
    ("granted", "required", "grants"),
    [
        ("*", "anything:at-all", True),
        ("orders:*", "orders:read", True),
        ("orders:*", "orders", False),
        ("orders:read", "orders:*", False),  # an exact scope does not grant the wildcard
        ("orders:read", "orders:read", True),
    ],
)
def test_scope_grants(granted: str, required: str, grants: bool) -> None:
    assert scope_grants(granted, required) is grants


# sidecar.proxy.routes: every reading of a path picks the same route


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/admin;x",
        "/v1/admin/",
        "/v1/%2561dmin",
        "/v1/ad%256din;y/",
        "/v1/admin%3bx",
        "/v1/ADMIN",
    ],
)
def test_a_path_that_reads_as_another_route_is_refused(raw_path: str) -> None:
    """`/v1/**` is public, `/v1/admin` is not: every reading must pick the same route."""
    table = RouteTable(
        [
            Route(path="/v1/admin", scopes=["admin:manage"]),
            Route(path="/v1/**", public=True),
        ],
        "deny",
    )
    with pytest.raises(NonCanonicalPath):
        table.match_reading("GET", read_path(raw_path))
    route = table.match_reading("GET", read_path("/v1/other;x/"))
    assert route is not None
    assert route.public


# Properties

_LITERAL = st.text(alphabet="ab.-", min_size=1, max_size=4)
_GLOB_SEGMENT = st.one_of(
    st.just("*"),
    _LITERAL,
    st.builds(lambda a, b: f"{a}*{b}", st.text("ab", max_size=2), st.text("ab", max_size=2)),
)
_PATH_SEGMENT = st.text(alphabet="ab.-*", max_size=4)


@given(
    glob_segments=st.lists(_GLOB_SEGMENT, min_size=1, max_size=5),
    path_segments=st.lists(_PATH_SEGMENT, min_size=1, max_size=7),
)
def test_glob_without_double_star_never_matches_another_segment_count(
    glob_segments: list[str], path_segments: list[str]
) -> None:
    pattern = compile_glob("/" + "/".join(glob_segments))
    path = "/" + "/".join(path_segments)
    if pattern.match(path):
        assert len(path_segments) == len(glob_segments)


@given(
    glob_segments=st.lists(_GLOB_SEGMENT, min_size=1, max_size=5),
    filler=st.text(alphabet="ab.-", min_size=1, max_size=4),
)
def test_glob_matches_a_path_built_from_it(glob_segments: list[str], filler: str) -> None:
    """The other side of the property above: it is not true just because nothing matches."""
    path = "/" + "/".join(segment.replace("*", filler) for segment in glob_segments)
    assert compile_glob("/" + "/".join(glob_segments)).match(path)
