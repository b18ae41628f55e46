"""`GET audit` (records without their bodies, scope read) and `GET audit/{request_id}` (the
whole record, bodies decrypted, scope audit). Path, query and headers are decrypted for both
when a key is configured: they are metadata an operator filters on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from psycopg import sql

from sidecar.admin.api.listing import PAGING, archive, page, source_of
from sidecar.admin.endpoint import Param
from sidecar.admin.paging import CHUNK, Page
from sidecar.admin.params import (
    parse_method,
    parse_path_prefix,
    parse_status,
    parse_text,
    read_query,
)
from sidecar.archive.database import database_errors
from sidecar.archive.reader import Entry
from sidecar.audit.entries import MalformedEntry, decode_entry
from sidecar.audit.trail import RECORD_FIELD
from sidecar.errors import InvalidParameter, NotFound

if TYPE_CHECKING:
    from sidecar.admin.context import AdminContext

# The bodies, by section: left out of lists, shown only to `sidecar:audit`.
BODIES = (("request", "raw_body"), ("request", "mapped_body"), ("response", "body"))
# Without an archive a record is looked for among this many of the newest (the id is random:
# there is no index on it in Redis); the archive finds any by its index.
LOOKUP_BUDGET = 50_000
_REQUEST_ID_MAX = 128
AUDIT_QUERY = (
    *PAGING,
    Param("key", {"type": "string", "minLength": 1}, "the key's name or id", parse_text),
    Param(
        "status", {"type": "string", "examples": ["404", "4xx"]}, "a code or class", parse_status
    ),
    Param("method", {"type": "string", "examples": ["GET"]}, "the request's method", parse_method),
    Param(
        "path_prefix",
        {"type": "string", "examples": ["/v1/orders/"]},
        "paths that start with this",
        parse_path_prefix,
    ),
)


async def list_audit(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """Records, newest first, without bodies."""
    page_ = await read_audit(context, read_query(request, AUDIT_QUERY))
    return web.json_response(page_.to_json())


async def read_audit(context: AdminContext, values: dict[str, Any]) -> Page:
    """One page of records without bodies under `AUDIT_QUERY`'s parsed `values`."""
    statuses = values["status"]

    def keep(record: dict[str, Any]) -> bool:
        status = _section(record, "response").get("status")
        key, method, prefix = values["key"], values["method"], values["path_prefix"]
        return (
            (key is None or key in (record.get("key_name"), record.get("key_id")))
            and (
                statuses is None
                or (isinstance(status, int) and statuses[0] <= status <= statuses[1])
            )
            and (method is None or record.get("method") == method)
            and (prefix is None or str(record.get("path", "")).startswith(prefix))
        )

    def decrypt(record: Any) -> dict[str, object]:
        stripped = without_bodies(record)
        return stripped if context.cipher is None else context.cipher.decrypt_record(stripped)

    source = source_of(context, context.settings.audit.stream)
    return await page(context, source, values, keep, decrypt)


async def get_audit(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """One record, whole, decrypted."""
    return web.json_response(await find_record(context, request.match_info["request_id"]))


async def find_record(context: AdminContext, request_id: str) -> dict[str, Any]:
    """The record of `request_id`, whole, decrypted; `NotFound` when there is none."""
    if not 1 <= len(request_id) <= _REQUEST_ID_MAX or not request_id.isprintable():
        raise InvalidParameter("request_id", f"1 to {_REQUEST_ID_MAX} printable characters")
    source = source_of(context, context.settings.audit.stream)
    decrypt = None if context.cipher is None else context.cipher.decrypt_record
    found = await _in_redis(context, source.stream, request_id)
    if found is None:
        async with archive(context) as conn:
            if conn is not None:
                with database_errors():
                    cursor = await conn.execute(
                        sql.SQL("SELECT document FROM {} WHERE request_id = %s LIMIT 1").format(
                            sql.Identifier(source.table.name)
                        ),
                        (request_id,),
                    )
                    row = await cursor.fetchone()
                if row is not None:
                    found = (b"0-0", {RECORD_FIELD.encode(): row[0].encode()})
    if found is None:
        raise NotFound("no audit record with that request id")
    try:
        record = decode_entry(found[1], RECORD_FIELD, decrypt)
    except MalformedEntry as exc:
        raise NotFound(f"the record cannot be read: {exc}") from None
    return record


def without_bodies(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` with its request and response bodies left out."""
    copy = dict(record)
    for section, name in BODIES:
        inner = copy.get(section)
        if isinstance(inner, dict):
            copy[section] = {k: v for k, v in inner.items() if k != name}
    return copy


async def _in_redis(context: AdminContext, stream: str, request_id: str) -> Entry | None:
    """The newest entry of `stream` whose record has `request_id`, among `LOOKUP_BUDGET`."""
    top = "+"
    needle = request_id.encode()
    for _ in range(LOOKUP_BUDGET // CHUNK):
        entries: Any = await context.redis.xrevrange(stream, max=top, count=CHUNK)
        for entry in entries:
            raw = entry[1].get(RECORD_FIELD.encode(), b"")
            # A cheap test on the bytes first; the decoded request_id decides.
            if needle in raw:
                try:
                    if decode_entry(entry[1], RECORD_FIELD).get("request_id") == request_id:
                        return entry  # type: ignore[no-any-return]
                except MalformedEntry:
                    continue
        if len(entries) < CHUNK:
            return None
        top = "(" + entries[-1][0].decode()
    return None


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    return value if isinstance(value, dict) else {}
