"""A page's filter form as query parameters: the API's own `Param` parsers (so a page and
the API accept the same values), with a form's empty fields meaning "no filter"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sidecar.admin.endpoint import Param
from sidecar.errors import InvalidParameter


def read_filters(
    request: web.Request, params: tuple[Param, ...], *, extra: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the parsed values, by parameter; the texts as given, for the form and the paging
    links). Unknown names are ignored (a bookmark from an older page still opens); a bad
    value is `InvalidParameter`, shown as a 400 page."""
    values: dict[str, Any] = {param.name: None for param in params}
    texts: dict[str, str] = {}
    for param in params:
        given = request.query.get(param.name, "").strip()
        if not given:
            continue
        texts[param.name] = given
        try:
            values[param.name] = param.parse(given)
        except ValueError as exc:
            raise InvalidParameter(param.name, str(exc)) from None
    for name in extra:
        given = request.query.get(name, "").strip()
        if given:
            texts[name] = given
    return values, texts


def link(path: str, texts: dict[str, str], **changes: str | None) -> str:
    """`path` with the filters in `texts`, some changed (None: left out)."""
    query = {**texts, **changes}
    kept = {name: value for name, value in query.items() if value}
    return f"{path}?{urlencode(kept)}" if kept else path
