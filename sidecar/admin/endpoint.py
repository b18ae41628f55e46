"""What declares one admin endpoint (`Endpoint`) and one query parameter (`Param`); the
table of them is `sidecar.admin.endpoints`. Apart from it so the handler modules can declare
their parameters without importing the table that imports them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:  # the context imports the services the handlers use, not this table
    from sidecar.admin.context import AdminContext

Schema = Mapping[str, Any]  # a JSON Schema (draft 2020-12, as OpenAPI 3.1 has it)
Handler = Callable[[web.Request, "AdminContext"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter: `parse` turns its text into the value the handler uses, or raises
    ValueError with a message that follows the parameter's name in the 400 answer."""

    name: str
    schema: Schema
    description: str
    parse: Callable[[str], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One operation of the admin API. `scope` None: served without a key (only the OpenAPI
    document). `responses`: status → JSON Schema of the body (None for no body)."""

    method: str
    path: str  # "/admin/v1/keys/{name}": aiohttp's and OpenAPI's placeholder syntax alike
    scope: str | None
    summary: str
    handler: Handler
    query: tuple[Param, ...] = ()
    body: Schema | None = None
    responses: Mapping[int, Schema | None] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        """A stable name for the operation: `get_keys_name`, `post_keys_name_rotate`."""
        words = [part.strip("{}") for part in self.path.split("/")[3:] if part]
        return "_".join([self.method.lower(), *words]).replace("-", "_").replace(".", "_")
