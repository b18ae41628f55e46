"""Plain and property tests of the pure module `sidecar.proxy.headers`: request ids, HSTS, the
headers forwarded and returned, the client address."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sidecar.config import Hsts
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


def request_headers_to_forward(
    headers: list[tuple[str, str]], connection: list[str], key_header: str | None
) -> list[tuple[str, str]]:
    return RequestHeaderPolicy(key_header, "drop").forward(headers, connection)


# sidecar.proxy.headers


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
