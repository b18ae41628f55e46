"""The admin API's one table (SPEC §16): every endpoint's method, path, scope, parameters,
body and answers. The admin server registers its handlers from it and checks each request's
scope against it; `sidecar.admin.openapi` turns the same table into the OpenAPI document, so
what is documented is what is served."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from sidecar.admin import schemas
from sidecar.admin.api import activity, audit, events, keys
from sidecar.admin.endpoint import Endpoint, Param
from sidecar.admin.openapi import document
from sidecar.keys.scopes import AUDIT, KEYS, READ

if TYPE_CHECKING:
    from sidecar.admin.context import AdminContext

__all__ = ["ENDPOINTS", "Endpoint", "Param"]
PREFIX = "/admin/v1"


async def _openapi(request: web.Request, context: AdminContext) -> web.StreamResponse:
    """The document of this very table."""
    return web.json_response(document(ENDPOINTS))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        method="GET",
        path=f"{PREFIX}/keys",
        scope=READ,
        summary="Every key's metadata (the `keys list --json` objects)",
        handler=keys.list_keys,
        responses={200: schemas.page_of(schemas.KEY)},
    ),
    Endpoint(
        method="POST",
        path=f"{PREFIX}/keys",
        scope=KEYS,
        summary="Issue a key: the answer holds it, shown this once",
        handler=keys.create_key,
        body=schemas.CREATE_BODY,
        responses={201: schemas.NEW_KEY},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/keys/{{name}}",
        scope=READ,
        summary="One key's metadata (the newest of its name)",
        handler=keys.get_key,
        responses={200: schemas.KEY},
    ),
    Endpoint(
        method="POST",
        path=f"{PREFIX}/keys/{{name}}/rotate",
        scope=KEYS,
        summary="Issue a successor (shown this once); the old key works for `grace` more",
        handler=keys.rotate_key,
        body=schemas.ROTATE_BODY,
        responses={201: schemas.NEW_KEY},
    ),
    Endpoint(
        method="POST",
        path=f"{PREFIX}/keys/{{name}}/revoke",
        scope=KEYS,
        summary="Revoke the name's keys, the ones in a rotation's grace too",
        handler=keys.revoke_key,
        responses={200: schemas.REVOKED},
    ),
    Endpoint(
        method="DELETE",
        path=f"{PREFIX}/keys/{{name}}",
        scope=KEYS,
        summary="Delete every record of the name",
        handler=keys.delete_key,
        responses={204: None},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/events",
        scope=READ,
        summary="Authentication events, newest first",
        handler=events.list_events,
        query=events.EVENT_QUERY,
        responses={200: schemas.page_of(schemas.EVENT)},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/audit",
        scope=READ,
        summary="Audit records without their bodies, newest first",
        handler=audit.list_audit,
        query=audit.AUDIT_QUERY,
        responses={200: schemas.page_of(schemas.AUDIT_SUMMARY)},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/audit/{{request_id}}",
        scope=AUDIT,
        summary="One audit record, whole, bodies decrypted",
        handler=audit.get_audit,
        responses={200: schemas.AUDIT_RECORD},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/activity",
        scope=READ,
        summary="Requests allowed and rejected (per event) in buckets over a range",
        handler=activity.get_activity,
        query=activity.ACTIVITY_QUERY,
        responses={200: schemas.ACTIVITY},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/admin-events",
        scope=READ,
        summary="Admin actions (keys created, rotated, revoked, deleted; sign-ins), newest first",
        handler=events.list_admin_events,
        query=events.ADMIN_EVENT_QUERY,
        responses={200: schemas.page_of(schemas.ADMIN_EVENT)},
    ),
    Endpoint(
        method="GET",
        path=f"{PREFIX}/openapi.json",
        scope=None,
        summary="This document",
        handler=_openapi,
        responses={200: schemas.OPENAPI},
    ),
)
