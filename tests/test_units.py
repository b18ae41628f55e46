"""Plain and property tests of the pure modules `sidecar.proxy.routes`, `.paths` and `.headers`."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sidecar.config import Hsts, Route
from sidecar.proxy.headers import (
    HOP_BY_HOP,
    IDENTITY_HEADERS,
    OVERRIDE_HEADERS,
    IPNetwork,
    RequestHeaderPolicy,
    client_address,
    connection_tokens,
    header_key,
    hsts_value,
    request_id,
    response_headers_to_return,
)
from sidecar.proxy.paths import NonCanonicalPath, read_path
from sidecar.proxy.routes import (
    UNMATCHED,
    RouteTable,
    compile_glob,
    missing_scopes,
    scope_grants,
)


def non_canonical(raw_path: str, _path: str) -> str | None:
    """The reason `read_path` refuses a path, or None."""
    try:
        read_path(raw_path)
    except NonCanonicalPath as exc:
        return str(exc)
    return None


def request_headers_to_forward(
    headers: list[tuple[str, str]], connection: list[str], key_header: str | None
) -> list[tuple[str, str]]:
    return RequestHeaderPolicy(key_header, "drop").forward(headers, connection)


# sidecar.routes: globs


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


# sidecar.routes: the route table


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


# sidecar.routes: scopes


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


# sidecar.routes: path canonicalisation


@pytest.mark.parametrize(
    ("raw_path", "path"),
    [
        ("/public/x", "/public/x"),
        ("/public/x/", "/public/x/"),
        ("/public/a%20b", "/public/a b"),
        ("/", "/"),
        ("/v1/orders/42", "/v1/orders/42"),
        ("/public/.well-known", "/public/.well-known"),
        ("/public/...", "/public/..."),
    ],
)
def test_canonical_paths_pass(raw_path: str, path: str) -> None:
    assert non_canonical(raw_path, path) is None


@pytest.mark.parametrize(
    ("raw_path", "path", "others"),
    [
        ("/v1/orders/42", "/v1/orders/42", ()),
        ("/public/a%20b", "/public/a b", ()),
        ("/v1/admin;jsessionid=1", "/v1/admin;jsessionid=1", ("/v1/admin",)),
        ("/v1/%2561dmin", "/v1/%61dmin", ("/v1/admin",)),
        ("/v1/admin/", "/v1/admin/", ("/v1/admin",)),
        ("/public/100%25", "/public/100%", ()),
    ],
)
def test_read_path_lists_every_reading(raw_path: str, path: str, others: tuple[str, ...]) -> None:
    reading = read_path(raw_path)
    assert reading.path == path
    assert reading.others == others


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


@pytest.mark.parametrize(
    ("raw_path", "path"),
    [
        ("/public/../admin", "/public/../admin"),
        ("/public/./x", "/public/./x"),
        ("/public/..", "/public/.."),
        ("/public/%2e%2e/x", "/public/../x"),
        ("/public%2fx", "/public/x"),
        ("/public%2Fx", "/public/x"),
        ("/public%5cx", "/public\\x"),
        ("/public\\x", "/public\\x"),
        ("//public/x", "//public/x"),
        ("/public//x", "/public//x"),
        ("/public/a%00b", "/public/a\x00b"),
        ("public/x", "public/x"),
        ("*", "*"),
        # SPEC §14: how Tomcat/Spring and double-decoding upstreams read the same bytes
        ("/public/..;/v1/orders/1", ""),
        ("/public/%2e%2e;x/v1/orders/1", ""),
        ("/public/.;/x", ""),
        ("/public/..%3b/x", ""),
        ("/public/%252e%252e/x", ""),
        ("/public/%252E./x", ""),
        ("/public%252Fx", ""),
        ("/public%255cx", ""),
        ("/public/a%2500", ""),
        ("/public/%c0%ae%c0%ae/x", ""),  # overlong UTF-8 dots: not UTF-8 at all
        ("/public/%25c0%25ae/x", ""),
        ("/public/a%0d%0aSet-Cookie:%20x", ""),  # control characters, decoded
        ("/public/a%e2%80%a8b", ""),  # U+2028, a line separator
    ],
)
def test_non_canonical_paths_are_refused(raw_path: str, path: str) -> None:
    reason = non_canonical(raw_path, path)
    assert isinstance(reason, str)
    assert reason


# sidecar.headers


def test_request_id_keeps_a_sane_client_value() -> None:
    for value in ("abc", "A-b_c.9", "x" * 128):
        assert request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 129, "has space", "semi;colon", "new\nline", "é", "a/b", "a,b", "abc\n"],
)
def test_request_id_replaces_anything_else(value: str | None) -> None:
    generated = request_id(value)
    assert generated != value
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_request_ids_are_unique() -> None:
    assert len({request_id(None) for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "max-age=31536000; includeSubDomains"),
        ({"include_subdomains": False}, "max-age=31536000"),
        ({"max_age": 0, "include_subdomains": False}, "max-age=0"),
        ({"preload": True}, "max-age=31536000; includeSubDomains; preload"),
        ({"max_age": 63072000, "preload": True}, "max-age=63072000; includeSubDomains; preload"),
    ],
)
def test_hsts_value(settings: dict[str, Any], expected: str) -> None:
    assert hsts_value(Hsts(**settings)) == expected


@pytest.mark.parametrize(
    ("values", "tokens"),
    [
        ([], set()),
        (["close"], {"close"}),
        (["keep-alive, X-Foo"], {"keep-alive", "x-foo"}),
        (["Upgrade", " x-a ,, X-B "], {"upgrade", "x-a", "x-b"}),
        ([""], set()),
    ],
)
def test_connection_tokens(values: list[str], tokens: set[str]) -> None:
    assert connection_tokens(values) == tokens


def test_request_headers_to_forward() -> None:
    headers = [
        ("Accept", "application/json"),
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "hop"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic x"),
        ("Authorization", "Bearer sk_live_x"),
        ("X-API-Key", "sk_live_x"),
        ("Host", "evil.example"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Request-Id", "client-id"),
        ("X-Sidecar-Key-Name", "forged"),
        ("x-sidecar-scopes", "*"),
        ("X_Sidecar_Key_Name", "forged"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Real-IP", "10.0.0.1"),
        ("X_Custom", "underscored"),
        ("Cookie", "a=b"),
        ("X-Custom", "1"),
        ("X-Custom", "2"),
    ]
    forwarded = request_headers_to_forward(
        headers, ["keep-alive, X-Private"], key_header="x-api-key"
    )
    assert forwarded == [
        ("Accept", "application/json"),
        ("Cookie", "a=b"),  # the upstream's own session cookie is the upstream's business
        ("X-Custom", "1"),
        ("X-Custom", "2"),
    ]


def test_request_headers_to_forward_drops_the_key_header_in_any_case() -> None:
    headers = [("X-Api-Key", "sk_live_x"), ("X-Kept", "1")]
    assert request_headers_to_forward(headers, [], key_header="X-API-Key") == [("X-Kept", "1")]
    assert request_headers_to_forward(headers, [], key_header="x-api-key") == [("X-Kept", "1")]


def test_response_headers_to_return() -> None:
    headers = [
        ("Content-Type", "text/plain"),
        ("Connection", "X-Hop"),
        ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Set-Cookie", "a=b"),
        ("Proxy-Authenticate", "Basic"),
    ]
    assert response_headers_to_return(headers, ["X-Hop"]) == [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=b"),
    ]


TRUSTED: list[IPNetwork] = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "expected"),
    [
        # no trusted proxies: the peer is the client, whatever the header says
        ("203.0.113.9", None, [], ("203.0.113.9", "203.0.113.9")),
        ("203.0.113.9", "198.51.100.1", [], ("203.0.113.9", "203.0.113.9")),
        # trusted proxies configured, but this peer is not one of them
        ("203.0.113.9", "198.51.100.1", TRUSTED, ("203.0.113.9", "203.0.113.9")),
        # a trusted proxy: its client is believed and the chain extended
        ("10.0.0.1", "198.51.100.1", TRUSTED, ("198.51.100.1", "198.51.100.1, 10.0.0.1")),
        (
            "10.0.0.1",
            "198.51.100.1, 10.0.0.2",
            TRUSTED,
            ("198.51.100.1", "198.51.100.1, 10.0.0.2, 10.0.0.1"),
        ),
        # a client's spoofed entry left of the first untrusted hop is not believed
        (
            "10.0.0.1",
            "1.2.3.4, 198.51.100.1",
            TRUSTED,
            ("198.51.100.1", "1.2.3.4, 198.51.100.1, 10.0.0.1"),
        ),
        # garbage stops the chain: the last believed address wins
        (
            "10.0.0.1",
            "198.51.100.1, garbage",
            TRUSTED,
            ("10.0.0.1", "198.51.100.1, garbage, 10.0.0.1"),
        ),
        ("10.0.0.1", "", TRUSTED, ("10.0.0.1", "10.0.0.1")),
        ("::1", "2001:db8::7", TRUSTED, ("2001:db8::7", "2001:db8::7, ::1")),
        # a trusted peer with no header is simply the client
        ("10.0.0.1", None, TRUSTED, ("10.0.0.1", "10.0.0.1")),
    ],
)
def test_client_address(
    peer: str, forwarded_for: str | None, trusted: list[IPNetwork], expected: tuple[str, str]
) -> None:
    lines = [] if forwarded_for is None else [forwarded_for]
    assert client_address(peer, lines, trusted) == expected


def test_client_address_reads_every_forwarded_for_line() -> None:
    """SPEC §14: a trusted proxy that appends its own line must not leave the client's line
    to be believed (a key allowlisted to 10.0.0.0/8 accepted from anywhere)."""
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    lines = ["10.9.9.9", "198.51.100.7"]  # the client's forgery, then the proxy's real address
    assert client_address("10.0.0.1", lines, trusted) == (
        "198.51.100.7",
        "10.9.9.9, 198.51.100.7, 10.0.0.1",
    )


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


# Hop-by-hop, credentials (the key header is added per example) and forgeable identity.
_NEVER_FORWARDED = sorted(HOP_BY_HOP | {"authorization", "proxy-authorization", *IDENTITY_HEADERS})

# Set by the proxy itself (not credentials, not hop-by-hop): dropped from the client's copy.
_SET_BY_PROXY_EXTRA = frozenset(
    {
        "host",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "expect",
    }
)


def any_case(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """The same header name with its letters' case shuffled: names are case-insensitive."""

    @st.composite
    def shuffled(draw: st.DrawFn) -> str:
        name = draw(names)
        flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        return "".join(c.upper() if up else c.lower() for c, up in zip(name, flips, strict=True))

    return shuffled()


@st.composite
def forwarding_cases(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[str], str | None]:
    """Client headers, `Connection` values and the key header, drawn so they overlap often."""
    key_header = draw(st.sampled_from([None, "x-api-key", "X-API-Key", "Api-Key"]))
    pool = [*_NEVER_FORWARDED, *_SET_BY_PROXY_EXTRA, "x-private", "x-custom", "accept", "cookie"]
    pool.append(key_header or "x-api-key")
    names = any_case(
        st.one_of(
            st.sampled_from(pool),
            st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True),
            st.sampled_from(pool).map(lambda name: name.replace("-", "_")),
        )
    )
    headers = draw(st.lists(st.tuples(names, st.text(max_size=5)), max_size=12))
    connection = draw(st.lists(st.lists(names, max_size=3).map(", ".join), max_size=2))
    return headers, connection, key_header


@given(case=forwarding_cases())
@example(case=([("x-API-key", "sk_live_x"), ("X-Kept", "1")], [], "X-API-Key"))
@example(case=([("X-Private", "1"), ("Connection", "x-private")], ["X-PRIVATE"], None))
def test_forwarded_request_headers_never_carry_hop_by_hop_or_credentials(
    case: tuple[list[tuple[str, str]], list[str], str | None],
) -> None:
    headers, connection, key_header = case
    forwarded = request_headers_to_forward(headers, connection, key_header)
    banned = set(_NEVER_FORWARDED) | connection_tokens(connection) | OVERRIDE_HEADERS
    if key_header is not None:
        banned.add(header_key(key_header))
    for name, _value in forwarded:
        assert header_key(name) not in banned, name
        assert not header_key(name).startswith(("x-sidecar-", "x-forwarded-")), name
        assert "_" not in name, name  # limits.headers_with_underscores: drop
    # Nothing else is lost, and order is kept.
    assert forwarded == [
        (name, value)
        for name, value in headers
        if header_key(name) not in banned
        and header_key(name) not in _SET_BY_PROXY_EXTRA
        and not header_key(name).startswith(("x-sidecar-", "x-forwarded-"))
        and "_" not in name
    ]
