"""The request head, screened before routing (SPEC §12 and §14): one reading of it or a refusal.

`RequestScreen.screen_head` and `read` refuse what the sidecar cannot read the way the
upstream will: a header block over the limit, `Connection` naming an end-to-end header, a
header read once sent twice, names with underscores (in `reject` mode), a body declared over
the limit, and a path with more than one reading. `misplaced_key` finds a key-shaped string
outside the credential header; the caller refuses the request (and flags the key if it
verifies).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import HttpVersion10, HttpVersion11, web

from sidecar.config import Settings
from sidecar.errors import BadRequest, BodyTooLarge, HeaderTooLarge, KeyInHeader, KeyInUrl
from sidecar.guard.keyshapes import find_key
from sidecar.proxy.headers import SINGLETONS, RequestHeaderPolicy
from sidecar.proxy.paths import NonCanonicalPath, PathReading, read_path

_VERSIONS = (HttpVersion10, HttpVersion11)


@dataclass(frozen=True, slots=True)
class MisplacedKey:
    """A key-shaped string where keys must not be, and the refusal to answer with."""

    presented: str
    refusal: KeyInUrl | KeyInHeader


class RequestScreen:
    """Built once from the settings; `read` and `misplaced_key` run on every request."""

    def __init__(self, settings: Settings) -> None:
        self.headers = RequestHeaderPolicy(
            settings.keys.header, settings.limits.headers_with_underscores
        )
        self._key_header = settings.keys.header
        self._singletons = SINGLETONS + ((settings.keys.header,) if settings.keys.header else ())
        self._max_header_bytes = settings.limits.max_header_bytes
        self._max_body = settings.limits.max_body_bytes
        where = (
            f"the Authorization header or {self._key_header}"
            if self._key_header
            else ("the Authorization header")
        )
        self._header_refusal = (
            f"API keys are accepted only in {where}; a key sent elsewhere is flagged exposed"
        )

    def screen_head(self, request: web.BaseRequest) -> None:
        """Raises the `Rejected` that answers a header block over the limit or one the
        upstream may read differently; returns when the head is unambiguous."""
        if request.version not in _VERSIONS:
            # llhttp takes `GET /x` (HTTP/0.9: no headers at all) and `HTTP/2.0` request lines;
            # aiohttp answers in the version asked for. Only HTTP/1.x is read as it is meant.
            raise BadRequest("only HTTP/1.0 and HTTP/1.1 requests are served")
        head = sum(len(name) + len(value) + 4 for name, value in request.raw_headers)
        if head > self._max_header_bytes:
            raise HeaderTooLarge(f"the header block is over {self._max_header_bytes} bytes")
        problem = self.headers.problem(
            request.headers.items(), request.headers.getall("Connection", ())
        )
        if problem is None:
            problem = self._duplicated_singleton(request)
        if problem is not None:
            raise BadRequest(problem)

    def read(self, request: web.BaseRequest) -> PathReading:
        """The path's readings (after `screen_head`), then the declared body size checked;
        raises the `Rejected` that answers an ambiguous path or a body over the limit."""
        try:
            reading = read_path(request.rel_url.raw_path)
        except NonCanonicalPath as exc:
            raise BadRequest(str(exc)) from None
        override = self.override_parameter(request)
        if override is not None:
            raise BadRequest(override)
        length = request.content_length
        if length is not None and length > self._max_body:
            raise BodyTooLarge(f"the request body is larger than {self._max_body} bytes")
        return reading

    def _duplicated_singleton(self, request: web.BaseRequest) -> str | None:
        """A second line of a header the sidecar reads one value of: the upstream may read
        the other one."""
        for name in self._singletons:
            if len(request.headers.getall(name, ())) > 1:
                return f"the {name} header may appear only once"
        return None

    def misplaced_key(self, request: web.BaseRequest, reading: PathReading) -> MisplacedKey | None:
        """A key-shaped string in the path (any reading), the query or a header other than
        the credential header: a URL is logged and cached by every hop, and another header is
        forwarded upstream and recorded."""
        url_text = reading.path
        if reading.others:
            url_text += "\n" + "\n".join(reading.others)
        if request.rel_url.raw_query_string:
            url_text += "\n" + request.rel_url.query_string
        found = find_key(url_text)  # decoded again, as an upstream may decode a query twice
        if found is not None:
            refusal = KeyInUrl(
                "API keys must not be sent in the URL; a key sent there is flagged exposed"
            )
            return MisplacedKey(found, refusal)
        found = self._key_in_other_header(request)
        if found is not None:
            return MisplacedKey(found, KeyInHeader(self._header_refusal))
        return None

    def override_parameter(self, request: web.BaseRequest) -> str | None:
        """Why the query carries a method override (`_method=DELETE`: Laravel, Symfony and
        Rails honour it), or None. Dropping override headers is not enough if the
        parameter form gets through."""
        query = request.rel_url.raw_query_string
        if query and "_method" in unquote_plus(query).lower():
            return "method override parameters (_method) are not accepted"
        return None

    def _key_in_other_header(self, request: web.BaseRequest) -> str | None:
        for name, value in request.headers.items():
            if ("_" not in value and "%" not in value) or self._is_credential_header(name, value):
                continue  # every key has underscores (%5F encoded): most values skip the regex
            found = find_key(value)  # cookies and forms are percent-decoded upstream
            if found is not None:
                return found
        return None

    def _is_credential_header(self, name: str, value: str) -> bool:
        lowered = name.lower()
        if lowered == "authorization":
            scheme, _, _token = value.partition(" ")
            return scheme.lower() == "bearer"
        return lowered == self._key_header
