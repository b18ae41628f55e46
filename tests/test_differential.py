"""SPEC §14 checked against a second parser: what the sidecar authorised is what the upstream read.

Every case of the corpus is sent, as exact bytes over TLS, to a sidecar in front of the aiohttp
upstream and to one in front of a WSGI (wsgiref) upstream. For each, either the sidecar refused
it (4xx, and the upstream saw nothing) or what the upstream parsed is what the sidecar
authorised: the same method, a path that selects the same route in every reading a framework
may have of it, identity variables equal to the sidecar's and nothing else spelled to map onto
them, no override or client-address header, one `X-Forwarded-For` of the sidecar's making,
and the body the sidecar read.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sidecar.proxy.routes import missing_scopes
from sidecar.storage.embedded import EmbeddedRedis
from tests.differential import (
    CLIENT_ADDRESS,
    KEY_SCOPES,
    KINDS,
    OVERRIDES,
    TABLE,
    Harness,
    Kind,
    cgi_name,
    harness_running,
    readings,
    route_label,
    sidecar_view,
)

ORDERS = "/v1/orders/1"
CANONICAL = {
    "X_SIDECAR_KEY_NAME": "X-Sidecar-Key-Name",
    "X_SIDECAR_KEY_ID": "X-Sidecar-Key-Id",
    "X_SIDECAR_SCOPES": "X-Sidecar-Scopes",
}


@pytest.fixture(scope="module")
def harness(
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    client_ssl: ssl.SSLContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    spool = tmp_path_factory.mktemp("differential-spool")
    with harness_running(cert_files, redis_server, client_ssl, spool) as running:
        yield running


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    target: str
    headers: tuple[str, ...] = ()
    body: bytes = b""
    auth: bool = True  # send the harness's orders:read key as a bearer token
    host: bool = True  # add `Host: localhost` (off when the case brings its own)
    refused: bool | None = None  # pinned outcome, when SPEC §14 says which; None: either
    body_read: bytes | None = None  # the body the upstream must read, when there is one


def payload(case: Case, key: str) -> bytes:
    lines = [f"{case.method} {case.target} HTTP/1.1"]
    if case.host:
        lines.append("Host: localhost")
    lines += case.headers
    if case.auth:
        lines.append(f"Authorization: Bearer {key}")
    lines.append("Connection: close")  # the sidecar closes after answering: no idle wait
    return ("\r\n".join([*lines, "", ""])).encode("latin-1") + case.body


def final_answer(raw: bytes) -> tuple[int, bytes]:
    """The final response's status and bytes, past any interim 1xx (100 Continue)."""
    while True:
        line = raw.split(b"\r\n", 1)[0]
        assert line.startswith(b"HTTP/1."), f"not an HTTP response: {raw[:80]!r}"
        status = int(line.split()[1])
        if status >= 200 or b"\r\n\r\n" not in raw:
            return status, raw
        raw = raw.split(b"\r\n\r\n", 1)[1]


def check(harness: Harness, kind: Kind, case: Case) -> int:
    """Send `case` through the sidecar in front of `kind`; assert SPEC §14; return the status."""
    outcome = harness.exchange(kind, payload(case, harness.key.key))
    status, raw = final_answer(outcome.answer.raw)
    if status >= 400:
        assert outcome.heard == [], f"answered {status}, yet the upstream received it"
        assert case.refused is not False, f"refused with {status}: {raw[-300:]!r}"
        return status
    assert case.refused is not True, f"served with {status}; SPEC §14 refuses it"
    assert status == 200, raw[:300]
    assert len(outcome.heard) == 1, outcome.heard
    heard = outcome.heard[0]
    assert heard.kind == kind

    view = sidecar_view(case.method, case.target)
    assert view is not None, "served, though the sidecar's own reading of the path refuses it"
    route = view.route
    assert route is not None, "served, though no route matches"
    granted = KEY_SCOPES if case.auth else ()
    assert route.public or (case.auth and not missing_scopes(granted, route.scopes)), (
        f"served on {route_label(route)} without the scopes it needs"
    )

    # The method the route check used is the method the upstream read.
    assert heard.method == view.method

    # Every reading the upstream's framework may route on selects the sidecar's route.
    for path in sorted(readings(heard)):
        chosen = TABLE.match(heard.method, path)
        assert chosen is route, (
            f"the sidecar routed {view.path!r} to {route_label(route)}; the {kind} upstream "
            f"can read {path!r} (from {heard.raw_target!r}), which is {route_label(chosen)}"
        )

    # Identity: the sidecar's three headers, as it spelled them, and nothing mapping onto them.
    expected = {} if route.public else harness.identity()
    identity = [
        (name, value) for name, value in heard.headers if cgi_name(name).startswith("X_SIDECAR_")
    ]
    assert sorted(identity) == sorted((CANONICAL[k], v) for k, v in expected.items()), identity
    if kind == "wsgi":
        environ = {
            cgi_name(name.removeprefix("HTTP_")): value
            for name, value in heard.environ.items()
            if cgi_name(name.removeprefix("HTTP_")).startswith("X_SIDECAR_")
        }
        assert environ == expected
        spelled = [name for name in heard.environ if cgi_name(name) != name]
        assert not [n for n in spelled if cgi_name(n).removeprefix("HTTP_") in IDENTITY_NAMES]

    # No override or client-address header in any spelling; one X-Forwarded-For, the sidecar's.
    hidden = [n for n, _ in heard.headers if cgi_name(n) in OVERRIDES | CLIENT_ADDRESS]
    assert hidden == []
    forwarded_for = [(n, v) for n, v in heard.headers if cgi_name(n) == "X_FORWARDED_FOR"]
    assert forwarded_for == [("X-Forwarded-For", "127.0.0.1")]

    if case.body_read is not None:
        assert heard.body == case.body_read
    return status


IDENTITY_NAMES = set(CANONICAL)

# -- the corpus -----------------------------------------------------------------------------------

CHUNKED_BODY = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

HEADERS = [
    Case("underscored-scopes", "GET", ORDERS, ("X_Sidecar_Scopes: *",)),
    Case("underscored-name-public", "GET", "/public/x", ("X_Sidecar_Key_Name: root",)),
    Case("scopes-twice", "GET", ORDERS, ("x-sidecar-scopes: *", "x-sidecar-scopes: admin:*")),
    Case("scopes-odd-case", "GET", ORDERS, ("X-SIDECAR-scopes: *",)),
    Case("mixed-separators", "GET", ORDERS, ("x_Sidecar-KEY_id: k_1",)),
    Case("identity-on-public", "GET", "/public/x", ("X-Sidecar-Key-Name: root",), auth=False),
    Case("tab-in-value", "GET", ORDERS, ("X-Sidecar-Key-Name:\troot\t",)),
    Case("space-before-colon", "GET", ORDERS, ("X-Sidecar-Scopes : *",), refused=True),
    Case("tab-before-colon", "GET", ORDERS, ("X-Sidecar-Scopes\t: *",), refused=True),
    Case("obs-fold", "GET", ORDERS, ("X-Note: a", " X-Sidecar-Scopes: *"), refused=True),
    Case("authorization-twice", "GET", ORDERS, ("Authorization: Bearer x",), refused=True),
    Case("host-twice", "GET", ORDERS, ("Host: evil.example",), refused=True),
    Case(
        "content-type-twice",
        "GET",
        "/public/x",
        ("Content-Type: a/b", "Content-Type: c/d"),
        refused=True,
    ),
    Case("connection-names-scopes", "GET", ORDERS, ("Connection: X-Sidecar-Scopes",), refused=True),
    Case(
        "connection-names-underscored-id",
        "GET",
        ORDERS,
        ("Connection: x_sidecar_key_id",),
        refused=True,
    ),
    Case(
        "connection-names-authorization",
        "GET",
        ORDERS,
        ("Connection: Authorization",),
        refused=True,
    ),
    Case(
        "connection-names-xff", "GET", "/public/x", ("Connection: X-Forwarded-For",), refused=True
    ),
    Case(
        "connection-names-content-length",
        "POST",
        "/public/x",
        ("Connection: Content-Length", "Content-Length: 2"),
        b"ok",
        refused=True,
    ),
    Case(
        "connection-names-extension",
        "GET",
        ORDERS,
        ("Connection: keep-alive, X-Private", "X-Private: 1"),
        refused=False,
    ),
]

OVERRIDE_CASES = [
    Case(f"override-{name.lower()}", "GET", ORDERS, (f"{name}: {value}",), refused=False)
    for name, value in (
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/v1/admin"),
        ("X-Rewrite-URL", "/v1/admin"),
        ("X_HTTP_Method_Override", "DELETE"),
        ("x-original-method", "DELETE"),
    )
]

PATHS = [
    Case("parameter-same-route", "GET", "/v1/orders/1;v=2", refused=False),
    Case("tomcat-dotdot", "GET", "/public/..;/v1/admin", refused=True),
    Case("tomcat-dot", "GET", "/public/.;/v1/orders/1", auth=False, refused=True),
    Case("encoded-dotdot", "GET", "/public/%2e%2e/v1/admin", refused=True),
    Case("encoded-dotdot-upper", "GET", "/public/%2E%2E/v1/orders/1", auth=False, refused=True),
    Case("double-encoded-dotdot", "GET", "/public/%252e%252e/v1/admin", refused=True),
    Case("double-encoded-letter", "GET", "/v1/%2561dmin", refused=True),
    Case("encoded-letter", "GET", "/v1/%61dmin"),  # /v1/admin: the admin route, 403
    Case("encoded-slash", "GET", "/public/..%2fv1%2fadmin", refused=True),
    Case("encoded-slash-plain", "GET", "/public/a%2fb", refused=True),
    Case("double-encoded-slash", "GET", "/public/x%252Fv1", refused=True),
    Case("encoded-backslash", "GET", "/public/..%5cv1%5cadmin", refused=True),
    Case("backslash", "GET", "/public/..\\v1\\admin", refused=True),
    Case("overlong-utf8-dot", "GET", "/public/%c0%ae%c0%ae/v1/admin", refused=True),
    Case("latin1-byte", "GET", "/public/%ff", refused=True),
    Case("encoded-semicolon", "GET", "/v1/admin%3bx", refused=True),
    Case("encoded-nul", "GET", "/v1/orders/1%00", refused=True),
    Case("trailing-slash-admin", "GET", "/v1/admin/", refused=True),
    Case("trailing-slash-orders", "GET", "/v1/orders/1/", refused=False),
    Case("double-slash-inner", "GET", "/v1//admin", refused=True),
    Case("double-slash-leading", "GET", "//v1/admin", refused=True),
    Case("dot-segment", "GET", "/v1/./admin", refused=True),
    Case("dot-last", "GET", "/v1/orders/.", refused=True),
    Case("query-with-dots", "GET", "/v1/orders/1?next=/../admin&a=%2e%2e", refused=False),
    Case("fragment", "GET", "/public/x#/../../v1/admin", auth=False),
    Case("unlisted-method-falls-to-public", "PATCH", ORDERS, auth=False),
    Case("write-method-needs-write", "DELETE", ORDERS, refused=True),
]

TARGETS = [
    Case("absolute-form", "GET", "http://localhost/v1/orders/1", refused=False),
    Case("absolute-form-other-host", "GET", "http://evil.example/v1/orders/1", refused=False),
    Case("absolute-form-dotdot", "GET", "http://localhost/public/../v1/admin", refused=True),
    Case(
        "absolute-form-encoded-dotdot",
        "GET",
        "http://localhost/public/%2e%2e/v1/admin",
        refused=True,
    ),
    Case("absolute-form-https-port", "GET", "https://localhost:443/v1/orders/1"),
    Case("asterisk-form", "GET", "*", refused=True),
    Case("host-elsewhere", "GET", ORDERS, ("Host: evil.example",), host=False, refused=False),
    Case("host-with-path", "GET", ORDERS, ("Host: localhost/v1/admin",), host=False),
    Case("no-host", "GET", ORDERS, host=False),
    Case("forwarded-host", "GET", ORDERS, ("X-Forwarded-Host: evil.example",), refused=False),
]

FORWARDED_FOR = [
    Case("xff-one", "GET", ORDERS, ("X-Forwarded-For: 10.0.0.1",), refused=False),
    Case(
        "xff-two-lines",
        "GET",
        ORDERS,
        ("X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2"),
        refused=False,
    ),
    Case("xff-underscored", "GET", ORDERS, ("X_Forwarded_For: 10.0.0.1",), refused=False),
    Case("xff-odd-case", "GET", ORDERS, ("x-FORWARDED-for: 10.0.0.1",), refused=False),
    Case(
        "real-ip", "GET", ORDERS, ("X-Real-IP: 10.0.0.1", "Forwarded: for=10.0.0.1"), refused=False
    ),
]

BODIES = [
    Case(
        "content-length-body",
        "POST",
        "/public/echo",
        ("Content-Type: text/plain", "Content-Length: 5"),
        b"hello",
        body_read=b"hello",
        refused=False,
    ),
    Case(
        "chunked-body",
        "POST",
        "/public/echo",
        ("Content-Type: text/plain", "Transfer-Encoding: chunked"),
        CHUNKED_BODY,
        body_read=b"hello world",
        refused=False,
    ),
    Case(
        "chunked-and-length",
        "POST",
        "/public/echo",
        ("Transfer-Encoding: chunked", "Content-Length: 5"),
        CHUNKED_BODY,
        refused=True,
    ),
    Case(
        "chunked-twice",
        "POST",
        "/public/echo",
        ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        CHUNKED_BODY,
        refused=True,
    ),
    Case(
        "chunked-not-last",
        "POST",
        "/public/echo",
        ("Transfer-Encoding: chunked, gzip",),
        CHUNKED_BODY,
        refused=True,
    ),
    Case(
        "length-twice-differing",
        "POST",
        "/public/echo",
        ("Content-Length: 5", "Content-Length: 6"),
        b"hello!",
        refused=True,
    ),
    Case(
        "expect-continue",
        "POST",
        "/public/echo",
        ("Expect: 100-continue", "Content-Type: text/plain", "Content-Length: 5"),
        b"hello",
        body_read=b"hello",
        refused=False,
    ),
    Case(
        "expect-continue-refused",
        "POST",
        ORDERS,
        ("Expect: 100-continue", "Content-Length: 5"),
        b"hello",
        refused=True,
    ),
]

CORPUS = HEADERS + OVERRIDE_CASES + PATHS + TARGETS + FORWARDED_FOR + BODIES


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_the_upstream_reads_what_the_sidecar_authorised(
    harness: Harness, kind: Kind, case: Case
) -> None:
    check(harness, kind, case)


# -- properties through the running proxy ---------------------------------------------------------

# One harness for every example: the proxy is not restarted, only asked again.
THROUGH_PROXY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NAMES = (
    "x-sidecar-key-name",
    "x-sidecar-key-id",
    "x-sidecar-scopes",
    "x-sidecar-anything",
    "x-http-method-override",
    "x-forwarded-for",
    "x-real-ip",
    "x-custom-header",
)


@st.composite
def spelling(draw: st.DrawFn) -> str:
    """A header name as a client may spell it: any case, `-` or `_` between the words."""
    base = draw(st.sampled_from(NAMES))
    characters = [
        draw(st.sampled_from("-_")) if ch == "-" else (ch.upper() if draw(st.booleans()) else ch)
        for ch in base
    ]
    return "".join(characters)


@THROUGH_PROXY
@given(
    kind=st.sampled_from(KINDS),
    path=st.sampled_from(["/public/x", ORDERS]),
    forged=st.lists(
        st.tuples(spelling(), st.sampled_from(["*", "root", "admin:manage", "10.0.0.1", "a b"])),
        min_size=1,
        max_size=4,
    ),
)
def test_no_spelling_of_an_identity_header_reaches_the_upstream(
    harness: Harness, kind: Kind, path: str, forged: list[tuple[str, str]]
) -> None:
    headers = tuple(f"{name}: {value}" for name, value in forged)
    check(harness, kind, Case("generated", "GET", path, headers, refused=False))


PIECES = (
    "public",
    "v1",
    "admin",
    "orders",
    "1",
    ".",
    "..",
    "%2e",
    "%2E",
    "%252e",
    ";x",
    "%3b",
    "%2f",
    "%25",
    "%2561dmin",
    "%61",
)
NAMED = ("public", "v1", "admin", "orders", "1", "a")
# Mostly plain names, so that a good share of paths is served and the readings are compared.
SEGMENT = st.one_of(
    st.sampled_from(NAMED),
    st.sampled_from(NAMED),
    st.lists(st.sampled_from(PIECES + NAMED), min_size=1, max_size=3).map("".join),
)
FIRST = st.one_of(st.sampled_from(["public", "v1"]), SEGMENT)


@THROUGH_PROXY
@given(
    kind=st.sampled_from(KINDS),
    method=st.sampled_from(["GET", "GET", "DELETE"]),
    first=FIRST,
    segments=st.lists(SEGMENT, min_size=0, max_size=4),
    trailing=st.booleans(),
    auth=st.booleans(),
)
def test_no_encoding_reaches_a_protected_route_through_a_public_one(
    harness: Harness,
    kind: Kind,
    method: str,
    first: str,
    segments: list[str],
    trailing: bool,
    auth: bool,
) -> None:
    """Either a 4xx with nothing upstream, or every reading the upstream may have of the
    path (its own decoding, decoded again, `;params` removed, dots resolved) selects the
    route the sidecar authorised."""
    target = "/" + "/".join([first, *segments]) + ("/" if trailing else "")
    event(f"status {check(harness, kind, Case('generated', method, target, auth=auth))}")


# -- found by this module, and fixed: readings beyond SPEC §14's first list ---------------------
# Each case below was served, and an upstream of a common kind reads it as something the
# sidecar did not authorise.

OTHER_SEPARATORS = [
    Case("dotted-scopes", "GET", ORDERS, ("X.Sidecar.Scopes: admin:manage",)),
    Case("dotted-key-name", "GET", "/public/x", ("X-Sidecar.Key-Name: root",), auth=False),
    Case("tilde-key-id", "GET", "/public/x", ("X~Sidecar~Key~Id: k",), auth=False),
    Case("dotted-method-override", "GET", ORDERS, ("X.HTTP.Method.Override: DELETE",)),
    Case("dotted-forwarded-for", "GET", ORDERS, ("X.Forwarded.For: 10.0.0.1",)),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", OTHER_SEPARATORS, ids=[case.id for case in OTHER_SEPARATORS])
def test_header_names_with_other_separators_do_not_reach_the_upstream(
    harness: Harness, kind: Kind, case: Case
) -> None:
    check(harness, kind, case)


def framework_readings(path: str) -> set[str]:
    """Readings outside SPEC §14's list that common routers apply: case-insensitive matching
    (Express's and ASP.NET Core's default), a `.format` suffix ignored (Rails' `(.:format)`,
    Spring MVC's suffix patterns before 5.3), whitespace trimmed from segments (Spring's
    AntPathMatcher before 4.3, CVE-2016-5007)."""
    segments = path.split("/")
    trimmed = "/".join(segment.strip() for segment in segments)
    suffixless = "/".join([*segments[:-1], segments[-1].split(".", 1)[0]])
    return {path.lower(), trimmed, suffixless}


UNLISTED_READINGS = [
    Case("upper-case-admin", "GET", "/v1/ADMIN"),
    Case("mixed-case-orders-without-key", "GET", "/v1/Orders/1", auth=False),
    Case("format-suffix", "GET", "/v1/admin.json"),
    Case("trailing-space", "GET", "/v1/admin%20"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", UNLISTED_READINGS, ids=[case.id for case in UNLISTED_READINGS])
def test_paths_routers_read_as_a_protected_route_are_refused(
    harness: Harness, kind: Kind, case: Case
) -> None:
    status = check(harness, kind, case)
    if status >= 400:
        return
    view = sidecar_view(case.method, case.target)
    assert view is not None
    upstream = harness.last_heard
    for path in sorted(framework_readings(upstream.decoded_path)):
        chosen = TABLE.match(case.method, path)
        assert chosen is view.route, (
            f"served as {route_label(view.route)}; a router may read {path!r} "
            f"(from {upstream.raw_target!r}), which is {route_label(chosen)}"
        )
