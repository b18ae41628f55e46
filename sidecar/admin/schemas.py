"""Pure: the JSON Schemas of the admin API's bodies and answers, named once and referenced by
the endpoint table (and so by the OpenAPI document the tests validate answers against)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_TIME = {"type": ["string", "null"], "format": "date-time"}
KEY: Schema = {
    "type": "object",
    "required": ["name", "id", "status", "scopes", "environment", "created_at"],
    "properties": {
        "name": {"type": "string"},
        "id": {"type": "string"},
        "status": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "environment": {"type": "string"},
        "service": {"type": ["string", "null"]},
        "created_at": _TIME,
        "expires_at": _TIME,
        "last_used_at": _TIME,
        "rotated_from": {"type": ["string", "null"]},
        "rotated_to": {"type": ["string", "null"]},
        "rotation_due": {"type": "boolean"},
        "exposed": {"type": "boolean"},
        "allow_ips": {"type": "array", "items": {"type": "string"}},
    },
}
NEW_KEY: Schema = {
    "allOf": [
        KEY,
        {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
    ]
}
REVOKED: Schema = {
    "type": "object",
    "required": ["name", "revoked"],
    "properties": {
        "name": {"type": "string"},
        "revoked": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}
PROBLEM: Schema = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
_DOCUMENT: Schema = {"type": "object", "required": ["ts"], "properties": {"ts": {"type": "string"}}}
EVENT: Schema = {
    **_DOCUMENT,
    "required": ["ts", "event"],
    "properties": {"ts": {"type": "string"}, "event": {"type": "string"}},
}
ADMIN_EVENT: Schema = {
    "type": "object",
    "required": ["ts", "action", "actor"],
    "properties": {
        "ts": {"type": "string"},
        "action": {"type": "string"},
        "actor": {"type": "object", "required": ["kind", "name"]},
        "target": {"type": ["string", "null"]},
    },
}
_BODYLESS = {"not": {"anyOf": [{"required": ["raw_body"]}, {"required": ["mapped_body"]}]}}
AUDIT_SUMMARY: Schema = {
    "type": "object",
    "required": ["ts", "request_id", "method", "path", "response"],
    "properties": {
        "request_id": {"type": "string"},
        "request": {"type": "object", **_BODYLESS},
        "response": {"type": "object", "not": {"required": ["body"]}},
    },
}
AUDIT_RECORD: Schema = {
    "type": "object",
    "required": ["ts", "request_id", "method", "path", "request", "response"],
}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
ACTIVITY: Schema = {
    "type": "object",
    "required": ["buckets", "totals"],
    "properties": {
        "buckets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["start", "allowed", "rejected"],
                "properties": {
                    "start": {"type": "string"},
                    "allowed": {"type": "integer", "minimum": 0},
                    "rejected": _COUNTS,
                },
            },
        },
        "totals": {
            "type": "object",
            "required": ["allowed", "rejected"],
            "properties": {"allowed": {"type": "integer", "minimum": 0}, "rejected": _COUNTS},
        },
    },
}
CREATE_BODY: Schema = {
    "type": "object",
    "required": ["name", "scopes"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "expires": {"type": ["string", "null"], "description": "30d, 24h or an RFC 3339 time"},
        "allow_ips": {"type": "array", "items": {"type": "string"}},
        "service": {"type": ["string", "null"]},
    },
}
ROTATE_BODY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"grace": {"type": "string", "default": "24h"}},
}
OPENAPI: Schema = {"type": "object", "required": ["openapi", "paths"]}


def page_of(item: Schema) -> Schema:
    """A list answer: `{"items": [...], "next_cursor": str | null}`."""
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
