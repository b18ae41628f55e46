"""SPEC §17: "URL credentials (upstream, Redis, archive) are masked in every log line", and a
client's header value quoted in a log line is masked and bounded like the record's.

The pure masking (`sidecar.config.url_credentials`), the structlog processor that applies it to
every line (`sidecar.runtime.logs.mask_urls`), then a real `serve` process configured with
passwords in its upstream and Redis URLs, whose whole output is searched for them."""

from __future__ import annotations

import json
import logging
import signal
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog

from sidecar.config import load_settings
from sidecar.config.url_credentials import mask_url_credentials
from sidecar.errors import ConfigError
from sidecar.guard.shown import HEADER_SHOWN_CHARS
from sidecar.runtime.logs import configure_logging, mask_urls
from sidecar.storage.embedded import EmbeddedRedis
from tests.auditsupport import the_record
from tests.helpers import (
    free_port,
    raw_tls_exchange,
    serve_config,
    sidecar_process,
    wait_ready,
    wait_until,
)
from tests.keysupport import event_for
from tests.luhn import luhn_number
from tests.upstream import UpstreamServer

CARD = luhn_number("411111111111111")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://user:pw@h:6379/0", "redis://user:***@h:6379/0"),
        ("rediss://:pw@h:6380", "rediss://:***@h:6380"),
        ("https://token@api.example/v1", "https://***@api.example/v1"),
        ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        # Sentinel: the master's password in the user part, the Sentinels' as an option.
        (
            "redis+sentinel://:pw@s1:26379,s2:26379/main/0?sentinel_password=spw",
            "redis+sentinel://:***@s1:26379,s2:26379/main/0?sentinel_password=***",
        ),
        ("redis://default:pw@[::1]:7000", "redis://default:***@[::1]:7000"),  # a cluster node
        # The archive (next issue): libpq URLs, the password in the user part or an option.
        ("postgresql://audit:pw@db.internal/audit", "postgresql://audit:***@db.internal/audit"),
        (
            "postgres://db/audit?user=a&password=pw&sslmode=require",
            "postgres://db/audit?user=a&password=***&sslmode=require",
        ),
        # An `@` in the password (unescaped): the user part ends at the last one.
        ("redis://u:p@ss@w0rd@h/0", "redis://u:***@h/0"),
        # Quoted in a message, an exception or a repr.
        (
            "Error connecting to 'redis://:pw@h:1' (and http://u:p2@up)",
            "Error connecting to 'redis://:***@h:1' (and http://u:***@up)",
        ),
        # Nothing to mask: an `@` in a path or a query is not a user part.
        ("https://api.example/users/a@b.example", "https://api.example/users/a@b.example"),
        ("http://h/x?mail=a@b&page=2", "http://h/x?mail=a@b&page=2"),
        ("user:pw@host", "user:pw@host"),  # no URL: left alone (and not cheap to guess)
    ],
)
def test_url_credentials_are_masked_in_any_text(text: str, expected: str) -> None:
    assert mask_url_credentials(text) == expected
    assert mask_url_credentials(expected) == expected  # idempotent: a masked URL stays so


def test_text_without_a_url_is_the_same_object() -> None:
    text = "request " * 100
    assert mask_url_credentials(text) is text


def test_the_processor_masks_every_string_value_nested_or_not() -> None:
    error = ConnectionError("cannot reach redis://:exc-pw@h:1")
    event: dict[str, Any] = {
        "event": "listening on http://u:msg-pw@up",
        "upstream": "http://u:up-pw@up:8080",
        "nested": {"urls": ["redis://:list-pw@h", ("rediss://:tuple-pw@h",)], "n": 3},
        "error": error,
        "count": 2,
        "plain": "nothing here",
    }
    masked = mask_urls(None, "info", event)
    text = json.dumps(masked, default=repr)
    for secret in ("exc-pw", "msg-pw", "up-pw", "list-pw", "tuple-pw"):
        assert secret not in text
    assert masked["upstream"] == "http://u:***@up:8080"
    assert masked["count"] == 2
    assert masked["plain"] == "nothing here"


def test_the_processor_leaves_values_without_urls_untouched() -> None:
    nested = {"a": ["x", 1, None], "b": {"c": "d"}}
    event: dict[str, Any] = {"event": "request", "nested": nested, "path": "/v1/orders"}
    assert mask_urls(None, "info", event)["nested"] is nested


def test_a_config_error_quotes_a_wrong_url_without_its_password(tmp_path: Path) -> None:
    """`check-config` and `serve` print what they got for a key that is wrong: a URL wrong
    in another way (its scheme) may still carry the right password."""
    path = tmp_path / "sidecar.yaml"
    path.write_text("upstream: {url: 'ftp://svc:cfg-Pa55word@files.internal'}\n", "utf-8")
    with pytest.raises(ConfigError) as failure:
        load_settings(path, complete=False)
    (problem,) = failure.value.problems
    assert "cfg-Pa55word" not in problem
    assert "ftp://svc:***@files.internal" in problem


@pytest.fixture
def logging_configured() -> Iterator[None]:
    """`configure_logging` changes process-wide state: restored for the tests after this."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("aiohttp.access")
    disabled = access.disabled
    try:
        yield
    finally:
        root.handlers, root.level, access.disabled = handlers, level, disabled
        structlog.reset_defaults()


@pytest.mark.usefixtures("logging_configured")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_log_line_is_masked_ours_and_foreign_and_tracebacks(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", fmt)
    ours = structlog.get_logger("sidecar.test")
    ours.info("listening", upstream="https://svc:ours-pw@up.internal")
    try:
        raise ConnectionError("Error connecting to redis://default:tb-pw@redis:6379/0")
    except ConnectionError:
        ours.exception("writer failed")
        # A library's own logger, with its own traceback: the same processor chain.
        logging.getLogger("aiohttp.server").exception(
            "Error handling request to %s", "postgresql://audit:lib-pw@db/audit"
        )
    output = capsys.readouterr().err
    for secret in ("ours-pw", "tb-pw", "lib-pw"):
        assert secret not in output
    assert "https://svc:***@up.internal" in output
    assert "redis://default:***@redis:6379/0" in output  # the traceback is there, masked
    assert "postgresql://audit:***@db/audit" in output


# -- a real process -------------------------------------------------------------------------------

UPSTREAM_PASSWORD = "upstream-Pa55word"  # what must never appear
REDIS_PASSWORD = "redis-Pa55word"


def with_credentials(url: str, user: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


def head(lines: list[str], body: bytes = b"", connection: str = "close") -> bytes:
    """A request as sent, asking the sidecar to close after answering (the read ends there)."""
    fixed = ["Host: localhost", f"Content-Length: {len(body)}", f"Connection: {connection}"]
    start = "\r\n".join([*lines, *fixed, "", ""])
    return start.encode("latin-1") + body


@pytest.mark.slow
async def test_a_sidecar_never_logs_its_passwords_nor_a_client_header_as_sent(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    proxy_port, health_port = free_port(), free_port()
    # Redis accepts any password for a user with none (`nopass`): the URL works as it is.
    config = serve_config(
        tmp_path / "sidecar.yaml",
        proxy_port=proxy_port,
        health_port=health_port,
        cert_files=cert_files,
        upstream_url=with_credentials(upstream.url, "svc", UPSTREAM_PASSWORD),
        redis_url=with_credentials(redis_server.url, "default", REDIS_PASSWORD),
        log={"level": "debug", "format": "json"},
        shutdown={"drain_s": 0, "grace_s": 1},
    )
    long_type = "application/x-" + "z" * 300
    log = tmp_path / "sidecar.log"
    async with sidecar_process(config, log) as sidecar:
        async with aiohttp.ClientSession() as session:
            await wait_ready(sidecar, session, health_port)
        sent = [
            # Content-Encoding the guard does not inflate, holding a card number.
            head(
                [
                    "POST /public/upload HTTP/1.1",
                    "Content-Type: application/json",
                    f"Content-Encoding: x-{CARD}",
                ],
                b"{}",
            ),
            # A type the guard streams unread: its name is quoted in the log line.
            head(["POST /public/upload HTTP/1.1", f"Content-Type: application/x-{CARD}\tq"], b"x"),
            head(["POST /public/upload HTTP/1.1", f"Content-Type: {long_type}"], b"x"),
            # A Connection token naming a content- header: quoted in the refusal.
            head(["GET /public/x HTTP/1.1"], connection=f"close, content-{CARD}"),
        ]
        for payload in sent:
            answer = await raw_tls_exchange(proxy_port, payload, client_ssl, within=5)
            assert answer.status in (200, 400), answer.raw[:300]

        async def lines_logged() -> bool:
            return log.read_text(errors="replace").count('"event": "request"') >= len(sent)

        await wait_until(lines_logged, within=10)
        sidecar.process.send_signal(signal.SIGTERM)
        assert await sidecar.wait_exit(within=15) == 0
    output = log.read_text(errors="replace")
    assert UPSTREAM_PASSWORD not in output
    assert REDIS_PASSWORD not in output
    assert CARD not in output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(records) == len(output.splitlines())  # every line is one JSON document
    listening = next(record for record in records if record["event"] == "listening")
    assert listening["upstream"].startswith("http://svc:***@127.0.0.1:")
    notes = [record["guard"] for record in records if "guard" in record]
    assert f"not inspected: application/x-{'*' * 12}{CARD[-4:]}\tq streamed" in notes
    cut = len(long_type) - HEADER_SHOWN_CHARS
    assert f"not inspected: {long_type[:HEADER_SHOWN_CHARS]}…(+{cut} chars) streamed" in notes
    reasons = [record.get("reason", "") for record in records]
    assert any(f"content-{'*' * 12}{CARD[-4:]}" in reason for reason in reasons)
    assert "\t" not in output  # the renderer escaped the client's control character


@pytest.mark.slow
async def test_a_sidecar_whose_sentinels_fail_never_logs_their_passwords(
    tmp_path: Path, cert_files: tuple[Path, Path], upstream: UpstreamServer
) -> None:
    """The error path: Sentinels that do not answer, reported in warning lines that quote the
    client (redis-py's reprs) while the sidecar runs on its spool."""
    master_password, sentinel_password = "master-Pa55word", "sentinel-Pa55word"
    sentinels = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    config = serve_config(
        tmp_path / "sidecar.yaml",
        proxy_port=free_port(),
        health_port=free_port(),
        cert_files=cert_files,
        upstream_url=with_credentials(upstream.url, "svc", UPSTREAM_PASSWORD),
        redis_url=(
            f"redis+sentinel://:{master_password}@{sentinels}/main"
            f"?sentinel_password={sentinel_password}"
        ),
        log={"level": "debug", "format": "json"},
        shutdown={"drain_s": 0, "grace_s": 1},
    )
    log = tmp_path / "sidecar.log"
    async with sidecar_process(config, log) as sidecar:

        async def redis_failure_logged() -> bool:
            if sidecar.process.returncode is not None:
                raise AssertionError(f"sidecar exited:\n{sidecar.log()}")
            text = log.read_text(errors="replace")
            return '"listening"' in text and '"level": "warning"' in text

        await wait_until(redis_failure_logged, within=20)
        sidecar.process.send_signal(signal.SIGTERM)
        await sidecar.wait_exit(within=15)
    output = log.read_text(errors="replace")
    for secret in (UPSTREAM_PASSWORD, master_password, sentinel_password):
        assert secret not in output


@pytest.mark.slow
async def test_the_record_the_event_and_the_log_line_show_one_masked_path(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    """SPEC §17, end to end: a card number in a public path (a record and a log line) and in a
    path refused for want of a key (an event and a log line) is shown masked, the same in each."""
    proxy_port, health_port = free_port(), free_port()
    config = serve_config(
        tmp_path / "sidecar.yaml",
        proxy_port=proxy_port,
        health_port=health_port,
        cert_files=cert_files,
        upstream_url=upstream.url,
        redis_url=redis_server.url,
        routes=[{"path": "/public/**", "public": True}, {"path": "/v1/**", "scopes": ["a:b"]}],
        shutdown={"drain_s": 0, "grace_s": 1},
    )
    public, refused = f"/public/cards/{CARD}", f"/v1/cards/{CARD}"
    log = tmp_path / "sidecar.log"
    async with sidecar_process(config, log) as sidecar:
        async with aiohttp.ClientSession() as session:
            await wait_ready(sidecar, session, health_port)
        ids = {}
        for path in (public, refused):
            ids[path] = f"mask-{uuid.uuid4().hex}"
            payload = head([f"GET {path} HTTP/1.1", f"X-Request-Id: {ids[path]}"])
            await raw_tls_exchange(proxy_port, payload, client_ssl, within=5)
        record = await the_record(redis_client, ids[public])
        event = await event_for(redis_client, ids[refused])
        sidecar.process.send_signal(signal.SIGTERM)
        await sidecar.wait_exit(within=15)
    logged = {
        line["request_id"]: line["path"]
        for line in map(json.loads, log.read_text().splitlines())
        if line.get("event") == "request"
    }
    assert event is not None
    assert record["path"] == logged[ids[public]] == f"/public/cards/{'*' * 12}{CARD[-4:]}"
    assert event["path"] == logged[ids[refused]] == f"/v1/cards/{'*' * 12}{CARD[-4:]}"
