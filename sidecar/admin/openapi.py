"""Pure: the OpenAPI 3.1 document of the admin API, made from the endpoint table alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sidecar.admin.schemas import PROBLEM

if TYPE_CHECKING:
    from sidecar.admin.endpoint import Endpoint

TITLE = "sidecar admin API"
VERSION = "1"
_PROBLEM_JSON = "application/problem+json"
# What any authenticated endpoint may answer besides its own statuses (SPEC §6, §16).
_COMMON = {
    400: "a parameter or field cannot be used",
    401: "no admin key",
    429: "too many failures",
}


def document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The OpenAPI document: one operation per endpoint, its scope in `security` and in
    `x-sidecar-scope`, every error as problem+json."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "components": {
            "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM},
        },
        "paths": paths,
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    placeholders = [part.strip("{}") for part in endpoint.path.split("/") if part.startswith("{")]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in placeholders
    ] + [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "schema": dict(p.schema),
            "description": p.description,
        }
        for p in endpoint.query
    ]
    responses: dict[str, Any] = {}
    for status, schema in endpoint.responses.items():
        answer: dict[str, Any] = {"description": f"{status}"}
        if schema is not None:
            answer["content"] = {"application/json": {"schema": dict(schema)}}
        responses[str(status)] = answer
    problems = dict(_COMMON) if endpoint.scope is not None else {}
    if endpoint.scope is not None:
        problems[403] = f"the key lacks {endpoint.scope}"
    if placeholders:
        problems[404] = "no such key or record"
    if endpoint.method == "POST":
        problems[409] = "the key's state does not allow it"
    problems[503] = "Redis or the archive unreachable"
    for status, description in problems.items():
        responses.setdefault(
            str(status),
            {
                "description": description,
                "content": {_PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        )
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "parameters": parameters,
        "responses": responses,
        "security": [] if endpoint.scope is None else [{"adminKey": []}],
    }
    if endpoint.scope is not None:
        operation["x-sidecar-scope"] = endpoint.scope
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.method == "POST" and "required" in endpoint.body,
            "content": {"application/json": {"schema": dict(endpoint.body)}},
        }
    return operation
