"""SPEC §14, the data guard fails closed: every body judged from its bytes, or refused.

Through the proxy (real TLS, the recording upstream, a real Redis): for each attack of the
issue, the status, the bytes the upstream got and what the record and event say. Then the pure
`screen_body` under hypothesis: in `reject` mode no Luhn-valid card reaches the upstream in any
decoding. Then the card scan's cost: linear, with bounded memory.
"""

from __future__ import annotations

import codecs
import gzip
import json
import time
import tracemalloc
import zlib
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.errors import ForbiddenData, UninspectableBody
from sidecar.guard import cards
from sidecar.guard.screen import screen_body
from tests.auditsupport import CARD, PASSWORD, send, the_record
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import event_for
from tests.luhn import luhn_windows
from tests.upstream import UpstreamServer

INSPECT = 16384
DOCUMENT = {"pan": CARD, "note": "héllo"}
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]
ENCODINGS += ["utf-32-be"]


def digits_only(data: bytes) -> str:
    return "".join(chr(byte) for byte in data if 48 <= byte <= 57)


@pytest.fixture
async def reject(start_proxy: ProxyFactory) -> Proxy:
    started: Proxy = await start_proxy(
        data_guard={"card_numbers": "reject", "credentials": "reject", "max_inspect_bytes": INSPECT}
    )
    return started


@pytest.fixture
async def redact(start_proxy: ProxyFactory) -> Proxy:
    started: Proxy = await start_proxy(data_guard={"max_inspect_bytes": INSPECT})
    return started


async def event_named(redis: aioredis.Redis, request_id: str) -> dict[str, Any]:
    async def there() -> bool:
        return await event_for(redis, request_id) is not None

    await wait_until(there, within=5)
    event = await event_for(redis, request_id)
    assert event is not None
    return event


async def refused(
    proxy: Proxy, redis: aioredis.Redis, upstream: UpstreamServer, status: int, event: str,
    data: bytes, headers: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    sent = await send(proxy, "POST", "/public/in", data=data, headers=headers)
    assert sent.status == status, sent.body
    assert upstream.seen == []
    assert CARD.replace(" ", "") not in digits_only(sent.body)
    assert (await event_named(redis, sent.request_id))["event"] == event
    record = await the_record(redis, sent.request_id)
    assert record["response"]["status"] == status
    return record


# -- through the proxy: reject mode ----------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_json_in_every_rfc8259_encoding_is_inspected(
    reject: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer, encoding: str
) -> None:
    body = json.dumps(DOCUMENT, ensure_ascii=False).encode(encoding)
    record = await refused(
        reject, redis_client, upstream, 422, "forbidden_data", body,
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert record["request"]["inspected"] is True


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, json.dumps(DOCUMENT).encode()),  # no Content-Type: sniffed as JSON
        ({"Content-Type": "application/x-json"}, json.dumps(DOCUMENT).encode()),
        ({"Content-Type": "application/octet-stream"}, b"\x00\x01 " + CARD.encode()),
        ({"Content-Type": "text/plain"}, f"login password={PASSWORD}".encode()),
        (
            {"Content-Type": "multipart/form-data; boundary=b0undary"},
            b"--b0undary\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n"
            + PASSWORD.encode()
            + b"\r\n--b0undary--\r\n",
        ),
        (
            {"Content-Type": "multipart/form-data; boundary=b0undary"},
            b"--b0undary\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n"
            b"\r\npay " + CARD.encode("utf-16") + b"\r\n--b0undary--\r\n",
        ),
        (
            {"Content-Type": "application/json", "Content-Encoding": "gzip, gzip"},
            gzip.compress(gzip.compress(json.dumps(DOCUMENT).encode())),
        ),
        (
            {"Content-Type": "application/json", "Content-Encoding": "br"},
            brotli.compress(json.dumps(DOCUMENT).encode()),
        ),
    ],
    ids=["untyped", "x-json", "octet-stream", "text-password", "multipart-password",
         "multipart-utf16-card", "gzip-gzip", "br"],
)  # fmt: skip
async def test_bodies_once_forwarded_unread_are_refused_with_422(
    reject: Proxy,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    headers: dict[str, str],
    body: bytes,
) -> None:
    record = await refused(reject, redis_client, upstream, 422, "forbidden_data", body, headers)
    assert record["request"]["inspected"] is True
    assert PASSWORD not in json.dumps(record)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json", "Content-Encoding": "compress"}, b"\x1f\x9d..."),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"not gzip at all"),
        # A zip bomb: 64 KiB of zeros per few bytes, far past max_inspect_bytes once inflated.
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"},
         gzip.compress(b"0" * (8 * INSPECT))),
        ({"Content-Type": "text/plain; charset=x-unheard-of"}, b"hello"),
        ({"Content-Type": "multipart/form-data"}, b"--x\r\n\r\nno boundary parameter\r\n--x--"),
        ({"Content-Type": "application/json"},
         b"[" * 80 + b'{"password": "' + PASSWORD.encode() + b'"}' + b"]" * 80),
    ],
    ids=["unknown-coding", "bad-gzip", "zip-bomb", "unknown-charset", "no-boundary", "deep"],
)  # fmt: skip
async def test_bodies_the_guard_cannot_read_are_refused_with_415(
    reject: Proxy,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    headers: dict[str, str],
    body: bytes,
) -> None:
    if body.startswith(b"["):
        # Over-deep JSON that holds a credential is found by the text scan: 422 first.
        await refused(reject, redis_client, upstream, 422, "forbidden_data", body, headers)
        body = body.replace(b"password", b"tokenish").replace(PASSWORD.encode(), b"x")
    record = await refused(reject, redis_client, upstream, 415, "uninspectable_body", body, headers)
    assert PASSWORD not in json.dumps(record)


async def test_a_binary_body_past_the_inspect_limit_is_refused_in_reject_mode(
    reject: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    blob = bytes(range(256)) * (INSPECT // 256 + 4)
    sent = await send(
        reject, "POST", "/public/in", data=blob, headers={"Content-Type": "image/png"}
    )
    assert sent.status == 413
    assert upstream.seen == []


# -- through the proxy: redact mode ----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le"])
async def test_redact_masks_wide_json_in_its_own_encoding(
    redact: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer, encoding: str
) -> None:
    body = json.dumps(DOCUMENT, ensure_ascii=False).encode(encoding)
    sent = await send(
        redact, "POST", "/public/in", data=body, headers={"Content-Type": "application/json"}
    )
    assert sent.status == 200
    forwarded = upstream.seen[-1].body
    text = forwarded.decode(encoding)
    assert json.loads(text) == {"pan": "**** **** **** 1111", "note": "héllo"}
    record = await the_record(redis_client, sent.request_id)
    assert record["request"]["inspected"] is True
    assert record["request"]["body_encoding"] == "base64"
    assert codecs.decode(forwarded, encoding) == text


async def test_redact_masks_a_gzip_body_and_sends_it_gzipped(
    redact: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = gzip.compress(json.dumps(DOCUMENT).encode())
    sent = await send(
        redact,
        "POST",
        "/public/in",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert sent.status == 200
    seen = upstream.seen[-1]
    assert seen.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(seen.body))["pan"] == "**** **** **** 1111"
    record = await the_record(redis_client, sent.request_id)
    import base64

    assert base64.b64decode(record["request"]["mapped_body"]) == seen.body  # as sent


async def test_redact_forwards_a_clean_compressed_body_byte_for_byte(
    redact: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = zlib.compress(b'{"qty": 1}')
    sent = await send(
        redact,
        "POST",
        "/public/in",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "deflate"},
    )
    assert sent.status == 200
    assert upstream.seen[-1].body == body
    assert (await the_record(redis_client, sent.request_id))["request"]["inspected"] is True


async def test_redact_forwards_what_it_cannot_read_unchanged_and_the_record_says_so(
    redact: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    # Content-Encoding says gzip, the bytes are cleartext: the upstream gets them as they came,
    # and mapped_body shows exactly that (never a masked body the upstream did not get).
    body = json.dumps(DOCUMENT).encode()
    sent = await send(
        redact,
        "POST",
        "/public/in",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert sent.status == 200
    assert upstream.seen[-1].body == body
    record = await the_record(redis_client, sent.request_id)
    assert record["request"]["inspected"] is False
    assert record["request"]["mapped_body"] == body.decode()


async def test_redact_masks_multipart_parts_and_keeps_the_framing(
    redact: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = (
        b'--zz\r\nContent-Disposition: form-data; name="user[password]"\r\n\r\n'
        + PASSWORD.encode()
        + b'\r\n--zz\r\nContent-Disposition: form-data; name="pan"\r\n\r\n'
        + CARD.encode()
        + b"\r\n--zz--\r\n"
    )
    sent = await send(
        redact,
        "POST",
        "/public/in",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert sent.status == 200
    assert upstream.seen[-1].body == (
        b'--zz\r\nContent-Disposition: form-data; name="user[password]"\r\n\r\n[REDACTED]'
        b'\r\n--zz\r\nContent-Disposition: form-data; name="pan"\r\n\r\n**** **** **** 1111'
        b"\r\n--zz--\r\n"
    )
    record = await the_record(redis_client, sent.request_id)
    assert PASSWORD not in json.dumps(record)
    assert record["request"]["inspected"] is True


async def test_redact_over_deep_json_is_scanned_as_text_and_recorded_uninspected(
    redact: Proxy, redis_client: aioredis.Redis, upstream: UpstreamServer
) -> None:
    body = b"[" * 80 + b'{"password": "' + PASSWORD.encode() + b'"}' + b"]" * 80
    sent = await send(
        redact, "POST", "/public/in", data=body, headers={"Content-Type": "application/json"}
    )
    assert sent.status == 200
    assert PASSWORD.encode() not in upstream.seen[-1].body
    record = await the_record(redis_client, sent.request_id)
    assert record["request"]["inspected"] is False
    assert record["request"]["mapped_body"] == upstream.seen[-1].body.decode()


# -- the invariant, under hypothesis ---------------------------------------------------------

CARDS = ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"]
WIDE = ["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]
CONTENT_TYPES = [
    None, "", "application/json", "application/x-json", "text/plain",
    "text/plain; charset=utf-16", "application/x-www-form-urlencoded",
    "application/octet-stream", "application/x-unknown", "multipart/form-data; boundary=QQ",
]  # fmt: skip


@st.composite
def carded_bodies(draw: st.DrawFn) -> tuple[bytes, str | None, str | None]:
    card = draw(st.sampled_from(CARDS))
    shape = draw(st.sampled_from(["json", "text", "form"]))
    filler = draw(st.text(alphabet="abc xyz=&{}", max_size=12))
    text = {
        "json": json.dumps({"n": filler, "pan": card}),
        "text": f"{filler} {card} {filler}",
        "form": f"a={filler}&pan={card}",
    }[shape]
    encoding = draw(st.sampled_from(WIDE))
    raw = text.encode(encoding)
    if draw(st.booleans()):
        marks = {
            "utf-8": codecs.BOM_UTF8,
            "utf-16-le": codecs.BOM_UTF16_LE,
            "utf-16-be": codecs.BOM_UTF16_BE,
            "utf-32-le": codecs.BOM_UTF32_LE,
            "utf-32-be": codecs.BOM_UTF32_BE,
        }
        raw = marks[encoding] + raw
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type and content_type.startswith("multipart"):
        raw = b'--QQ\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + raw + b"\r\n--QQ--"
    coding = draw(st.sampled_from([None, "gzip", "deflate", "gzip, deflate"]))
    if coding:
        for applied in coding.split(", "):
            raw = gzip.compress(raw) if applied == "gzip" else zlib.compress(raw)
    return raw, content_type, coding


def readings(body: bytes, coding: str | None) -> list[str]:
    """Every way a recipient might read the bytes: inflated or not, in every encoding."""
    layers = [body]
    if coding:
        try:
            for _layer in coding.split(", "):
                layers.append(zlib.decompress(layers[-1], 47))  # gzip or zlib, by header
        except zlib.error:
            pass
    return [layer.decode(encoding, "ignore") for layer in layers for encoding in [*WIDE, "latin-1"]]


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(carded_bodies(), st.sampled_from(["reject", "redact"]))
def test_no_card_reaches_the_upstream_in_any_decoding(
    case: tuple[bytes, str | None, str | None], mode: str
) -> None:
    body, content_type, coding = case
    try:
        result = screen_body(
            body,
            content_type,
            coding,
            card_numbers=mode,
            credentials="off",
            route_map=None,
            max_inspect_bytes=1 << 20,
        )
    except (ForbiddenData, UninspectableBody):
        assert mode == "reject"
        return
    assert mode != "reject", "a carded body was forwarded in reject mode"
    if result.inspected:
        for reading in readings(result.body, coding):
            assert luhn_windows(reading) == [], reading


# -- the cost bound --------------------------------------------------------------------------

MIB = 1 << 20
DIGIT_GROUPS = ("1234 5678 " * (MIB // 10 + 1))[:MIB]
SHORT_GROUPS = ("123 " * (MIB // 4 + 1))[:MIB]
ALL_CARDS = ("4111 1111 1111 1111 " * (MIB // 20 + 1))[:MIB]
PROSE = ("lorem ipsum dolor sit amet 42 " * (MIB // 30 + 1))[:MIB]


def cpu(text: str) -> float:
    started = time.process_time()
    cards.mask_cards(text)
    return time.process_time() - started


def peak(text: str) -> int:
    text = text[: MIB // 4]  # tracemalloc slows the scan tenfold: a quarter MiB is enough
    tracemalloc.start()
    try:
        cards.mask_cards(text)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_card_scan_is_linear_in_time() -> None:
    """Doubling the input at most ~doubles the work (ratios, not absolute times)."""
    half = DIGIT_GROUPS[: MIB // 2]
    small, large = min(cpu(half) for _ in range(2)), min(cpu(DIGIT_GROUPS) for _ in range(2))
    assert large < 3 * small + 0.05, (small, large)


@pytest.mark.parametrize("text", [DIGIT_GROUPS, SHORT_GROUPS, PROSE], ids=["4s", "3s", "prose"])
def test_the_card_scan_needs_bounded_memory(text: str) -> None:
    """No card: beyond the text itself the scan holds a block of groups, not the whole run."""
    assert peak(text) < MIB // 8  # was ~140 MB per MiB of digit groups, growing with the run


def test_masking_every_card_costs_memory_in_proportion_to_the_output() -> None:
    # The spans found and the masked copy: ~16 MB per MiB of nothing but cards.
    assert peak(ALL_CARDS) < 6 * MIB


def test_a_chain_of_cards_spelled_by_kept_digits_is_one_pass() -> None:
    """Each mask's kept four digits plus the next groups spell another card: one pass finds
    them all (a repeat-until-clean loop made this quadratic)."""
    number = "4111 1111 1111 1111"
    chain = [number]
    for _ in range(200):
        tail = chain[-1][-4:]
        for candidate in range(10**3):
            middle = f"{candidate:03d}0 0000 000"
            digits = tail + middle.replace(" ", "")
            check = next(str(check) for check in range(10) if cards.luhn_valid(digits + str(check)))
            if check:
                break
        chain.append(f"{tail} {middle}{check}"[len(tail) + 1 :])
    text = " ".join([number, *chain[1:]])
    masked, found = cards.mask_cards(text)
    assert found
    assert luhn_windows(masked) == []
