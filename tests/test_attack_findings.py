"""An outsider's attempts at the fail-closed promise (README "Security model", docs/security.md).

Every test runs a real sidecar over TLS in front of the recording upstream, with the data guard
in `reject` mode, and sends exact bytes. The rule under attack: what the sidecar checks is
exactly what the upstream receives, and what it cannot read unambiguously it refuses.

- Tests named for a finding (F1…F12, their comments say which) were findings of the attack:
  bytes that reached the upstream although a common upstream reads a card number, a
  credential field, a key or a forged identity in them. Each asserts the fail-closed answer.
- The other tests are attacks that were refused already, kept as regression tests.
"""

from __future__ import annotations

import gzip
import json
import ssl
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.auditsupport import send, the_record
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import raw_tls_exchange
from tests.keysupport import bearer, issue, keys_section
from tests.upstream import UpstreamServer

CARD = "4111111111111111"
PASSWORD = "hunter2-Pw-7f3a9c"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
ESCAPED_CARD = "\\u0034111111111111111"  # JSON for "4111111111111111", first digit escaped
ROUTES = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/admin", "scopes": ["admin:manage"]},
    {"path": "/v1/items/*", "methods": ["DELETE"], "scopes": ["items:delete"]},
    {"path": "/v1/**", "public": True},
    {"path": "/v2/**", "scopes": ["orders:read"]},
]
REFUSED = (400, 415, 422)


@pytest.fixture
async def reject(start_proxy: ProxyFactory) -> Proxy:
    started: Proxy = await start_proxy(
        data_guard={"card_numbers": "reject", "credentials": "reject"},
        keys=keys_section(),
        routes=ROUTES,
    )
    return started


async def post(
    proxy: Proxy, body: bytes, content_type: str | None, path: str = "/public/in",
    **headers: str,
) -> int:  # fmt: skip
    sent = {**({"Content-Type": content_type} if content_type else {}), **headers}
    return (await send(proxy, "POST", path, headers=sent, data=body)).status


def assert_refused(status: int, upstream: UpstreamServer) -> None:
    """Fail closed: the request was refused and the upstream got nothing."""
    got = upstream.seen[-1].body if upstream.seen else None
    assert status in REFUSED, (status, got)
    assert upstream.seen == [], (status, got)


# == findings ======================================================================================

# -- F1: a declared charset the guard honours and the upstream ignores ---------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (f"{JSON}; charset=cp037", json.dumps({"password": PASSWORD}).encode()),
        (f"{JSON}; charset=ibm500", ('{"pan":"' + ESCAPED_CARD + '"}').encode()),
        (f"{JSON}; charset=utf-16", b'{"password":"' + PASSWORD.encode() + b'"}'),  # 32 bytes
        (f"{FORM}; charset=cp037", f"user=bob&password={PASSWORD}".encode()),
        (f"{FORM}; charset=utf-16", f"password={PASSWORD}".encode()),  # 26 bytes
    ],
    ids=[
        "json-cp037-password",
        "json-ibm500-escaped-card",
        "json-utf16-password",
        "form-cp037",
        "form-utf16",
    ],
)
async def test_declared_charset_blinds_the_guard(
    reject: Proxy, upstream: UpstreamServer, content_type: str, body: bytes
) -> None:
    assert_refused(await post(reject, body, content_type), upstream)


# -- F2: JSON Python's parser refuses is scanned as plain text: escaped digits unseen ------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, b'{"note":"\xff","pan":"' + ESCAPED_CARD.encode() + b'"}'),
        (None, b'{"note":"\xff","pan":"' + ESCAPED_CARD.encode() + b'"}'),
        ("application/octet-stream", b'{"note":"\xff","pan":"' + ESCAPED_CARD.encode() + b'"}'),
        (JSON, b'{"pan":"' + ESCAPED_CARD.encode() + b'",}'),
        (JSON, b'{"pan":"' + ESCAPED_CARD.encode() + b'"} // note'),
    ],
    ids=["bad-utf8-json", "bad-utf8-untyped", "bad-utf8-octet-stream", "trailing-comma", "comment"],
)
async def test_unparsable_json_hides_an_escaped_card(
    reject: Proxy, upstream: UpstreamServer, content_type: str | None, body: bytes
) -> None:
    assert_refused(await post(reject, body, content_type), upstream)


# -- F3: a card written as a JSON number in another notation ------------------------------------


@pytest.mark.parametrize("literal", ["4.111111111111111e15", "41111111111111110e-1"])
async def test_card_as_a_json_number_in_exponent_notation(
    reject: Proxy, upstream: UpstreamServer, literal: str
) -> None:
    assert float(literal) == 4111111111111111.0
    assert_refused(await post(reject, f'{{"pan":{literal}}}'.encode(), JSON), upstream)


# -- F4: credential fields in bracket / dotted names --------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (FORM, f"password[0]={PASSWORD}".encode()),
        (FORM, f"user[password][0]={PASSWORD}".encode()),
        (FORM, f"password[x]={PASSWORD}".encode()),
        (FORM, f"pass.word={PASSWORD}".encode()),
        (
            "multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="password[0]"\r\n\r\n'
            + PASSWORD.encode()
            + b"\r\n--XX--\r\n",
        ),
    ],
    ids=["form-index", "form-nested-index", "form-hash", "form-php-dot", "multipart-index"],
)
async def test_credential_field_in_an_array_name(
    reject: Proxy, upstream: UpstreamServer, content_type: str, body: bytes
) -> None:
    assert_refused(await post(reject, body, content_type), upstream)


# -- F5: `;` as a form separator -----------------------------------------------------------------


async def test_semicolon_separated_form_field(reject: Proxy, upstream: UpstreamServer) -> None:
    assert_refused(await post(reject, f"a=1;password={PASSWORD}".encode(), FORM), upstream)


# -- F6: a multipart part with two Content-Disposition headers ---------------------------------


async def test_multipart_part_with_two_dispositions(
    reject: Proxy, upstream: UpstreamServer
) -> None:
    body = (
        b"--XX\r\n"
        b'Content-Disposition: form-data; name="password"\r\n'
        b'Content-Disposition: form-data; name="comment"\r\n'
        b"\r\n" + PASSWORD.encode() + b"\r\n--XX--\r\n"
    )
    assert_refused(await post(reject, body, "multipart/form-data; boundary=XX"), upstream)


# -- F7: a key in a compressed form -------------------------------------------------------------


async def test_key_in_a_gzipped_form_field(
    reject: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    key = await issue(redis_client, reject.server.sidecar.settings, "leaky", ["orders:read"])
    body = gzip.compress(f"note=hi&api={key.key}".encode(), mtime=0)
    status = await post(reject, body, FORM, **{"Content-Encoding": "gzip"})
    assert status == 400
    assert upstream.seen == []


# -- F8: method override by parameter ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/items/7?_method=DELETE", b""), ("/v1/items/7", b"_method=DELETE")],
    ids=["query", "form-body"],
)
async def test_method_override_parameter_reaches_a_protected_method(
    reject: Proxy, upstream: UpstreamServer, path: str, body: bytes
) -> None:
    status = await post(reject, body, FORM, path=path)
    assert status in (400, 401, 403)
    assert upstream.seen == []


# -- F9: client-address headers outside the dropped list ----------------------------------------


@pytest.mark.parametrize("name", ["Client-IP", "X-Forwarded", "Forwarded-For", "X-Remote-Addr"])
async def test_other_client_address_headers_are_dropped(
    reject: Proxy, upstream: UpstreamServer, name: str
) -> None:
    sent = await send(reject, "GET", "/public/in", headers={name: "10.0.0.1"})
    assert sent.status == 200
    assert name not in upstream.seen[-1].headers


# -- F10: a percent-encoded key in a header -------------------------------------------------------


async def test_percent_encoded_key_in_a_cookie(
    reject: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    key = await issue(redis_client, reject.server.sidecar.settings, "cookie", ["orders:read"])
    sent = await send(
        reject, "GET", "/public/in", headers={"Cookie": "k=" + key.key.replace("_", "%5F")}
    )
    assert sent.status == 400
    assert upstream.seen == []


# -- F11: a key in a body (or a double-encoded query) is audited verbatim ------------------------


@pytest.mark.parametrize(
    ("content_type", "shape", "query"),
    [
        (JSON, '{{"note":"{key}"}}', False),
        ("text/plain", "see {key}", False),
        ("application/octet-stream", "{key}", False),
        (None, "", True),
    ],
    ids=["json", "text", "octet-stream", "double-encoded-query"],
)
async def test_key_in_a_body_is_refused_and_never_recorded(
    reject: Proxy, redis_client: aioredis.Redis, content_type: str | None, shape: str, query: bool
) -> None:
    key = (await issue(redis_client, reject.server.sidecar.settings, "body", ["a"])).key
    secret = key.rsplit("_", 1)[1]
    path = "/public/in" + ("?k=" + key.replace("_", "%255F") if query else "")
    headers = {"Content-Type": content_type} if content_type else {}
    sent = await send(
        reject, "POST", path, headers=headers, data=shape.format(key=key).encode() or None
    )
    # Refused before it is forwarded or recorded (key_in_header / key_in_url): no record
    # can hold it, and neither can the event.
    assert sent.status == 400
    entries: Any = await redis_client.xrange("sidecar:audit")
    assert all(secret.encode() not in fields[b"record"] for _id, fields in entries)
    events: Any = await redis_client.xrange("sidecar:auth-events")
    assert all(secret.encode() not in fields[b"event"] for _id, fields in events)


# -- F12: a card number in a request header is audited unmasked -------------------------------


async def test_card_in_a_header_is_kept_in_the_audit_record(
    reject: Proxy, redis_client: aioredis.Redis
) -> None:
    sent = await send(reject, "GET", "/public/in", headers={"X-Card": CARD})
    record = json.dumps(await the_record(redis_client, sent.request_id))
    assert CARD not in record, sent.status


async def test_card_in_the_path_and_query_is_masked_in_the_record(
    reject: Proxy, redis_client: aioredis.Redis
) -> None:
    sent = await send(reject, "GET", f"/public/{CARD}?pan={CARD}")
    record = json.dumps(await the_record(redis_client, sent.request_id))
    assert CARD not in record


# == refused today: regression tests ==============================================================


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        (JSON, b'{"pan":4111111111111111e0}', 422),
        (JSON, b'{"pan":-4111111111111111}', 422),
        (JSON, b'{"pan":4111111111111111.0}', 422),
        (JSON, b'{"pass\\u0077ord":"' + PASSWORD.encode() + b'"}', 422),
        (JSON, b'{"password":"","password":"' + PASSWORD.encode() + b'"}', 422),
        (JSON, b'{"a":[[[{"b":{"password":["' + PASSWORD.encode() + b'"]}}]]]}', 422),
        (JSON, ('{"pan":"' + CARD[:2] + "\\u0031" + CARD[3:] + '"}').encode(), 422),
        (
            f"{JSON}; charset=utf-7",
            b'{"pan":"+ADQ-111111111111111"}',
            415,
        ),  # a label that disagrees with the bytes
        (f"{JSON}; charset=utf-7", b'{"password":"' + PASSWORD.encode() + b'"}', 415),
        (FORM, b"pass%77ord=" + PASSWORD.encode(), 422),
        (FORM, b"pass+word=" + PASSWORD.encode(), 422),
        (FORM, b"a=1&password=&password=" + PASSWORD.encode(), 422),
        (FORM, b"pan=%34111111111111111", 422),
        (FORM, b"pan=4111+1111+1111+1111", 422),
        (f"{FORM}; charset=utf-7", b"+AHA-assword=" + PASSWORD.encode(), 415),
        ("text/plain; charset=utf-7", b"pan +ADQ-111111111111111", 422),
        ("application/octet-stream", b'{"pan":"' + ESCAPED_CARD.encode() + b'"}', 422),
        ("application/octet-stream", b"password=" + PASSWORD.encode(), 422),
    ],
)
async def test_refused_body_tricks(
    reject: Proxy, upstream: UpstreamServer, content_type: str, body: bytes, status: int
) -> None:
    assert await post(reject, body, content_type) == status
    assert upstream.seen == []


_PART = b'Content-Disposition: form-data; name="password"\r\n\r\n' + PASSWORD.encode()


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        # RFC 2231 names, plain and continued
        (
            "multipart/form-data; boundary=XX",
            b"--XX\r\nContent-Disposition: form-data; name*=utf-8''password\r\n\r\n"
            + PASSWORD.encode()
            + b"\r\n--XX--\r\n",
            422,
        ),
        (
            "multipart/form-data; boundary=XX",
            b"--XX\r\nContent-Disposition: form-data; name=\"password\"; name*=utf-8''c\r\n\r\n"
            + PASSWORD.encode()
            + b"\r\n--XX--\r\n",
            422,
        ),
        # two boundary parameters, whichever frames the body
        (
            "multipart/form-data; boundary=AA; boundary=XX",
            b"--XX\r\n" + _PART + b"\r\n--XX--\r\n",
            415,
        ),
        (
            "multipart/form-data; boundary=XX; boundary=AA",
            b"--XX\r\n" + _PART + b"\r\n--XX--\r\n",
            422,
        ),
        ('multipart/form-data; boundary="XX"', b"--XX\r\n" + _PART + b"\r\n--XX--\r\n", 422),
        # bare LF framing, a part in base64
        (
            "multipart/form-data; boundary=XX",
            b"--XX\n" + _PART.replace(b"\r\n", b"\n") + b"\n--XX--\n",
            415,
        ),
        (
            "multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="c"\r\nContent-Transfer-Encoding: base64'
            b"\r\n\r\nNDExMTExMTExMTExMTExMQ==\r\n--XX--\r\n",
            415,
        ),
        # nested multipart
        (
            "multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="f"\r\n'
            b"Content-Type: multipart/mixed; boundary=YY\r\n\r\n"
            b"--YY\r\nContent-Type: text/plain\r\n\r\npan " + CARD.encode() + b"\r\n--YY--"
            b"\r\n--XX--\r\n",
            422,
        ),
        # a part in UTF-16, declared and not
        (
            "multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="c"\r\n'
            b"Content-Type: text/plain; charset=utf-16\r\n\r\n"
            + f"pan {CARD}".encode("utf-16")
            + b"\r\n--XX--\r\n",
            422,
        ),
    ],
    ids=[
        "rfc2231",
        "rfc2231-beside-plain",
        "boundary-dup-first",
        "boundary-dup-second",
        "boundary-quoted",
        "bare-lf",
        "base64-part",
        "nested",
        "utf16-part",
    ],
)
async def test_refused_multipart_tricks(
    reject: Proxy, upstream: UpstreamServer, content_type: str, body: bytes, status: int
) -> None:
    assert await post(reject, body, content_type) == status
    assert upstream.seen == []


_CARD_JSON = json.dumps({"pan": CARD}).encode()


@pytest.mark.parametrize(
    ("coding", "body", "status"),
    [
        ("GZIP", gzip.compress(_CARD_JSON), 422),
        ("x-gzip", gzip.compress(_CARD_JSON), 422),
        ("gzip, identity", gzip.compress(_CARD_JSON), 422),
        ("identity, gzip", gzip.compress(_CARD_JSON), 422),
        (
            "gzip",
            gzip.compress(b'{"a":1,') + gzip.compress(b'"pan":"' + CARD.encode() + b'"}'),
            422,
        ),
        ("gzip", gzip.compress(b'{"a":1}') + b"\0\0\0\0", 415),
        ("gzip", gzip.compress(b'{"a":1}') + b"garbage", 415),
        ("gzip, gzip", gzip.compress(gzip.compress(_CARD_JSON)), 422),
        ("compress", b"\x1f\x9d\x90", 415),
    ],
    ids=[
        "upper",
        "x-gzip",
        "then-identity",
        "identity-first",
        "two-members",
        "zero-padding",
        "garbage",
        "stacked",
        "unknown",
    ],
)
async def test_refused_content_encoding_tricks(
    reject: Proxy, upstream: UpstreamServer, coding: str, body: bytes, status: int
) -> None:
    assert await post(reject, body, JSON, **{"Content-Encoding": coding}) == status
    assert upstream.seen == []


async def test_chunked_json_with_trailers_is_inspected(
    reject: Proxy, upstream: UpstreamServer, client_ssl: ssl.SSLContext
) -> None:
    """Chunked framing with a trailer section: the dechunked body is what the guard reads."""
    body = _CARD_JSON
    payload = (
        b"POST /public/in HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nTrailer: X-Pan\r\nConnection: close\r\n\r\n"
        + b"%x\r\n" % 5
        + body[:5]
        + b"\r\n%x\r\n" % (len(body) - 5)
        + body[5:]
        + b"\r\n0\r\nX-Pan: "
        + CARD.encode()
        + b"\r\n\r\n"
    )
    response = await raw_tls_exchange(reject.server.proxy_port, payload, client_ssl)
    assert response.status == 422
    assert upstream.seen == []


async def test_identity_header_spellings_do_not_reach_the_upstream(
    reject: Proxy, upstream: UpstreamServer, redis_client: aioredis.Redis
) -> None:
    key = await issue(redis_client, reject.server.sidecar.settings, "plain", ["orders:read"])
    forged = {
        "X-SIDECAR-SCOPES": "admin:manage",
        "x-sidecar-key-name": "root",
        "X-Sidecar-Key-ID": "forged",
        "X_Sidecar_Scopes": "admin:manage",
        "X.Sidecar.Key.Name": "root",
    }
    headers: dict[str, Any] = {**bearer(key.key), **forged}
    sent = await send(reject, "GET", "/v2/anything", headers=headers)
    assert sent.status == 200
    seen = upstream.seen[-1].headers
    assert seen.getall("X-Sidecar-Scopes") == ["orders:read"]
    assert seen.getall("X-Sidecar-Key-Name") == ["plain"]
    assert seen.getall("X-Sidecar-Key-Id") != ["forged"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin;x=1",
        "/v1/adm%69n",
        "/v1/adm%2569n",
        "/v1/admin%3b",
        "/v1/admin%20",
        "/v1/admin%c2%a0",
        "/v1/Admin",
        "/v1/admin.json",
        "/v1/admin/",
        "/public/..;/v1/admin",
        "/public/%2e%2e/v1/admin",
        "/v1//admin",
    ],
)
async def test_protected_route_through_a_public_reading_is_refused(
    reject: Proxy, upstream: UpstreamServer, path: str
) -> None:
    sent = await send(reject, "GET", path)
    assert sent.status in (400, 401), (path, sent.status)
    assert upstream.seen == []
