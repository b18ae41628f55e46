"""The archive's pure parts: a stream entry as a row or a poison entry with its reason, the
range of times it takes, partition names, the checkpoint text a MAC covers, and the settings."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.archive.checkpoints import (
    ChainCheckpoint,
    checkpoint_signed,
    checkpoint_text,
    sign_checkpoint,
)
from sidecar.archive.partitions import Partition, days_around, parse_partition
from sidecar.archive.rows import OUT_OF_RANGE, TsSpan, extract_rows
from sidecar.archive.tables import (
    ADMIN_EVENTS,
    AUDIT_RECORDS,
    AUTH_EVENTS,
    ArchivedStream,
    archived_streams,
)
from sidecar.audit.events import EVENT_FIELD
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.trail import RECORD_FIELD
from sidecar.config import Settings, load_settings
from sidecar.errors import ConfigError

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
SPAN = TsSpan.around(NOW, 90)
RECORDS = ArchivedStream("sidecar:audit", "record", AUDIT_RECORDS)
EVENTS = ArchivedStream("sidecar:auth-events", "event", AUTH_EVENTS)
ADMIN = ArchivedStream("sidecar:admin-events", "event", ADMIN_EVENTS, create=False)
CHAIN = {"writer": "0123456789abcdef", "seq": 7, "prev": "ab" * 32, "mac": "k1:" + "cd" * 32}


def record(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "v": 1,
        "ts": "2026-11-29T09:59:58.123456Z",
        "request_id": "req-1",
        "method": "POST",
        "path": "enc:v2:k:AAAA",
        "client_ip": "203.0.113.9",
        "key_name": "billing",
        "key_id": "kid1",
        "request": {"raw_body": "enc:v2:k:BBBB", "body_bytes": 623},
        "response": {"status": 201, "body": "enc:v2:k:CCCC", "body_bytes": 45},
        "duration_ms": 3.1,
        **CHAIN,
    }
    document.update(fields)
    return document


def encoded(**fields: Any) -> dict[bytes, bytes]:
    return {b"record": json.dumps(record(**fields)).encode()}


def entry(document: object, entry_id: bytes = b"1764410398123-4", field: str = "record") -> Any:
    return entry_id, {field.encode(): json.dumps(document).encode()}


def test_an_audit_record_becomes_its_row_with_the_document_byte_for_byte() -> None:
    raw_id, fields = entry(record())
    rows, poison = extract_rows([(raw_id, fields)], RECORDS, SPAN)
    assert poison == []
    (row,) = rows
    values = dict(zip(AUDIT_RECORDS.column_names, row.values, strict=True))
    assert values == {
        "ts": datetime(2026, 11, 29, 9, 59, 58, 123456, tzinfo=UTC),
        "stream_ms": 1764410398123,
        "stream_seq": 4,
        "request_id": "req-1",
        "writer": CHAIN["writer"],
        "seq": 7,
        "prev": CHAIN["prev"],
        "mac": CHAIN["mac"],
        "method": "POST",
        "status": 201,
        "key_id": "kid1",
        "key_name": "billing",
        "client_ip": "203.0.113.9",
        "duration_ms": 3.1,
        "request_bytes": 623,
        "response_bytes": 45,
        "document": fields[b"record"].decode(),  # encrypted fields stay as they were
    }
    assert row.entry_id == "1764410398123-4"
    assert row.day == date(2026, 11, 29)


def test_an_event_and_an_admin_event_fill_their_own_columns() -> None:
    event = {"v": 1, "ts": "2026-11-29T09:00:00Z", "event": "invalid_key", "request_id": "r",
             "client_ip": "198.51.100.1", "key_id": "kid2"}  # fmt: skip
    rows, _ = extract_rows([entry(event, field="event")], EVENTS, SPAN)
    values = dict(zip(AUTH_EVENTS.column_names, rows[0].values, strict=True))
    assert (values["event"], values["key_id"], values["key_name"]) == ("invalid_key", "kid2", None)
    assert values["writer"] is None  # a document without a chain still archives
    action = {"ts": "2026-11-29T09:00:00+00:00", "action": "keys.revoke", "actor_key_id": "a1"}
    rows, poison = extract_rows([entry(action, field="event")], ADMIN, SPAN)
    assert poison == []
    values = dict(zip(ADMIN_EVENTS.column_names, rows[0].values, strict=True))
    assert (values["action"], values["actor_key_id"], values["request_id"]) == (
        "keys.revoke",
        "a1",
        None,
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"other": b"{}"}, "no 'record' field"),
        ({b"record": b"{not json"}, "the 'record' field is not UTF-8 JSON"),
        ({b"record": b"\xff\xfe"}, "the 'record' field is not UTF-8 JSON"),
        ({b"record": b"[1, 2]"}, "the 'record' field is not a JSON object"),
        (encoded(ts=None), "no ts"),
        (encoded(ts="yesterday"), "the ts is not an ISO 8601 time"),
        (encoded(ts="2026-11-29T09:00:00"), "the ts has no time zone"),
        (encoded(ts="2026-01-01T00:00:00Z"), OUT_OF_RANGE),  # older than the retention
        (encoded(ts="2026-12-04T00:00:00Z"), OUT_OF_RANGE),  # past the partitions made ahead
        (encoded(request_id=None), "no request_id"),
    ],
)  # fmt: skip
def test_an_entry_that_cannot_be_placed_is_poison_with_its_reason(
    fields: dict[bytes, bytes], reason: str
) -> None:
    good = entry(record(request_id="good"), b"1-1")
    rows, poison = extract_rows([(b"1-0", fields), good], RECORDS, SPAN)
    assert [row.entry_id for row in rows] == ["1-1"]  # the rest of the batch goes on
    assert len(poison) == 1
    assert (poison[0].entry_id, poison[0].reason) == ("1-0", reason)
    assert poison[0].value == fields.get(b"record", b"")  # parked as it was


def test_an_event_without_a_name_is_poison() -> None:
    nameless = entry({"ts": "2026-11-29T09:00:00Z", "request_id": "r"}, field="event")
    _, poison = extract_rows([nameless], EVENTS, SPAN)
    assert [p.reason for p in poison] == ["no event name"]


def test_metadata_of_the_wrong_shape_is_left_null_and_the_record_still_archives() -> None:
    document = record(
        method=3,
        key_id="nul\u0000inside",
        key_name="\ud800",
        duration_ms="fast",
        response={"status": 2**40, "body_bytes": True},
        request="not a section",
        seq="7",
    )
    raw = json.dumps(document, allow_nan=False).encode()  # `\u0000` and `\ud800` as escapes
    rows, poison = extract_rows([(b"5-0", {b"record": raw})], RECORDS, SPAN)
    assert poison == []
    values = dict(zip(AUDIT_RECORDS.column_names, rows[0].values, strict=True))
    for column in ("method", "key_id", "key_name", "duration_ms", "status", "response_bytes",
                   "request_bytes", "seq"):  # fmt: skip
        assert values[column] is None, column
    assert values["document"] == raw.decode()


def test_a_deleted_entry_is_neither_row_nor_poison_and_an_oversized_id_is_poison() -> None:
    big = str(2**63).encode()
    rows, poison = extract_rows([(b"1-0", None), entry(record(), big + b"-0")], RECORDS, SPAN)
    assert rows == []
    assert [p.reason for p in poison] == ["the stream id does not fit the archive's bigint columns"]


def test_the_span_runs_from_the_retention_to_the_last_partition_made_ahead() -> None:
    span = TsSpan.around(NOW, 90)
    assert span.earliest == NOW - timedelta(days=90)
    assert span.latest == datetime(2026, 12, 3, tzinfo=UTC)  # the end of today + 3 days
    assert NOW in span
    assert span.latest not in span
    assert "2026-11-29" not in span


def test_partitions_are_named_by_table_and_utc_day() -> None:
    partition = Partition("audit_records", date(2026, 11, 29))
    assert partition.name == "audit_records_p20261129"
    assert partition.start == datetime(2026, 11, 29, tzinfo=UTC)
    assert partition.end - partition.start == timedelta(days=1)
    assert parse_partition("audit_records_p20261129") == partition
    assert parse_partition("activity_minutes_p20261301") is None  # no such day
    assert parse_partition("audit_records_old") is None
    assert days_around(date(2026, 11, 29)) == [date(2026, 11, d) for d in range(28, 31)] + [
        date(2026, 12, 1),
        date(2026, 12, 2),
    ]


def test_a_checkpoint_mac_binds_every_value() -> None:
    keys = IntegrityKeys.of([("k1", b"x" * 32)])
    cut = datetime(2026, 11, 29, 10, 0, 0, 1, tzinfo=UTC)
    checkpoint = ChainCheckpoint("sidecar:audit", "0123456789abcdef", 9, "ab" * 32, cut)
    assert checkpoint_text(checkpoint) == (
        b"sidecar:audit\n0123456789abcdef\n9\n" + b"ab" * 32 + b"\n2026-11-29T10:00:00.000001+00:00"
    )
    assert sign_checkpoint(checkpoint, None) is None
    mac = sign_checkpoint(checkpoint, keys)
    assert mac is not None
    assert mac.startswith("k1:")
    assert checkpoint_signed(checkpoint, mac, keys)
    moved = ChainCheckpoint("sidecar:audit", "fedcba9876543210", 9, "ab" * 32, cut)
    assert not checkpoint_signed(moved, mac, keys)
    assert not checkpoint_signed(checkpoint, None, keys)


def test_the_streams_and_fields_are_the_writers() -> None:
    settings = Settings(audit={"stream": "a:records", "events_stream": "a:events"})
    streams = archived_streams(settings)
    assert [(s.stream, s.field, s.table.name) for s in streams] == [
        ("a:records", RECORD_FIELD, "audit_records"),
        ("a:events", EVENT_FIELD, "auth_events"),
        ("sidecar:admin-events", "event", "admin_events"),
    ]
    assert streams[0].dead_letter == "a:records:dead-letter"
    assert [s.create for s in streams] == [True, True, False]


def test_the_archive_url_must_be_postgresql_and_its_error_names_the_key_not_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().archive.url is None  # unset: nothing is archived
    config = tmp_path / "sidecar.yaml"
    config.write_text("archive:\n  url: redis://user:hunter2@db:6379/0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, complete=False)
    assert caught.value.problems == ["archive.url: must be a postgresql:// or postgres:// URL"]
    assert "hunter2" not in str(caught.value)
    monkeypatch.setenv("SIDECAR_ARCHIVE__URL", "postgres://u:pw@db/archive?sslmode=require")
    settings = load_settings(config, complete=False)
    assert settings.archive.url == "postgres://u:pw@db/archive?sslmode=require"
    assert (settings.archive.redis_window_s, settings.archive.batch) == (3600, 500)
