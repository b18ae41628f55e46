"""Plain tests of the pure module `sidecar.proxy.paths`: the readings of a raw path, and the
non-canonical paths it refuses."""

from __future__ import annotations

import pytest

from sidecar.proxy.paths import NonCanonicalPath, read_path


def non_canonical(raw_path: str, _path: str) -> str | None:
    """The reason `read_path` refuses a path, or None."""
    try:
        read_path(raw_path)
    except NonCanonicalPath as exc:
        return str(exc)
    return None


# sidecar.proxy.paths: canonicalisation


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
