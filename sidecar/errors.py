"""The domain's exceptions. A `Rejected` describes its own response (status, title, event,
extra headers, whether the connection closes); `sidecar.proxy.problems` builds it, so no
aiohttp here.

Messages never contain a presented key: at most its public id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class SidecarError(Exception):
    """Base of everything `sidecar` raises on purpose."""


class ConfigError(SidecarError):
    """The configuration cannot be used; `problems` holds one line per problem, naming the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class UsageError(SidecarError):
    """A command-line value that cannot be used (exit 2)."""


class RedisUnreachable(SidecarError):
    """A command could not talk to Redis (exit 1). The message names the URL, never its
    password."""


class Rejected(SidecarError):
    """A request the proxy answers itself instead of forwarding.

    `status`, `title` and `event` are the contract of SPEC §6; `detail` is for the client;
    `headers` are extra response headers (a rate limit's `RateLimit-*`, say).
    """

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    default_event: ClassVar[str | None] = None
    # The connection cannot carry another request after this answer (an unread body).
    closes_connection: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.headers: Mapping[str, str] = headers or {}
        self.event: str | None = self.default_event


class AuthenticationFailed(Rejected):
    """401: the request carried no usable key. `event` names the reason in the events stream."""

    status = 401
    title = "Unauthorized"
    default_event = "unknown_key"

    def __init__(
        self,
        detail: str,
        *,
        event: str | None = None,
        key_id: str | None = None,
        key_name: str | None = None,
    ) -> None:
        super().__init__(detail)
        if event is not None:
            self.event = event
        self.key_id = key_id
        self.key_name = key_name


class MissingKey(AuthenticationFailed):
    """401: the route needs a key and the request carried none."""

    default_event = "missing_key"

    def __init__(self) -> None:
        super().__init__("this route needs an API key")


class KeyInUrl(Rejected):
    """400: a key-shaped string in the URL (SPEC §14)."""

    status = 400
    title = "API key in URL"
    default_event = "key_in_url"


class KeyInHeader(Rejected):
    """A key-shaped string in a header other than the credential header (SPEC §14)."""

    status = 400
    title = "API key in a header"
    default_event = "key_in_header"


class MissingScope(Rejected):
    """403: the key lacks a scope the route needs; `scopes` are the ones it needs."""

    status = 403
    title = "Forbidden"
    default_event = "missing_scope"

    def __init__(self, detail: str, scopes: list[str]) -> None:
        super().__init__(detail)
        self.scopes = scopes


class NoRoute(Rejected):
    """403: no route matches the request's method and path."""

    status = 403
    title = "Forbidden"
    default_event = "no_route"


class RateLimited(Rejected):
    """429: a rate limit is exceeded; `headers` carry the window's `RateLimit-*` fields."""

    status = 429
    title = "Too many requests"
    default_event = "rate_limited"


class BadRequest(Rejected):
    """400: a request that cannot be read; the connection is not kept."""

    status = 400
    title = "Bad request"
    closes_connection = True  # a client that sends what cannot be read is not kept


class InvalidParameter(Rejected):
    """400: a query parameter or body field the admin API cannot use; `parameter` names it
    and the detail starts with it (`since: use 30m, 24h, 7d or an RFC 3339 time`)."""

    status = 400
    title = "Invalid parameter"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class NotFound(Rejected):
    """404: no such path, or no such thing at it (a key name, a request id)."""

    status = 404
    title = "Not found"


class MethodNotAllowed(Rejected):
    """405: the path exists, not with this method; `Allow` lists the methods it takes."""

    status = 405
    title = "Method not allowed"


class Conflict(Rejected):
    """409: the change contradicts what exists (a name taken, a revoked key rotated)."""

    status = 409
    title = "Conflict"


class HeaderTooLarge(Rejected):
    """The header block (or one line of it) is over `limits.max_header_bytes`: SPEC §12."""

    status = 431
    title = "Request header fields too large"


class BodyTooLarge(Rejected):
    """413: the body is over `limits.max_body_bytes`; the connection is not kept."""

    status = 413
    title = "Content too large"
    closes_connection = True


class ForbiddenData(Rejected):
    """422: the data guard found forbidden data (a card number, a credential) in the body."""

    status = 422
    title = "Forbidden data in body"
    default_event = "forbidden_data"


class UninspectableBody(Rejected):
    """415: the data guard, in `reject` mode, cannot read this body unambiguously (SPEC §14)."""

    status = 415
    title = "Unsupported media type"
    default_event = "uninspectable_body"


class BodyTimeout(Rejected):
    """408: the client stopped sending its body for `limits.body_timeout_s` (SPEC §14)."""

    status = 408
    title = "Request timeout"
    closes_connection = True


class InternalError(Rejected):
    """500: the sidecar itself failed; the detail says nothing about why."""

    status = 500
    title = "Internal server error"


class UpstreamUnavailable(Rejected):
    """502: the upstream could not be reached or broke off its answer."""

    status = 502
    title = "Bad gateway"


class UpstreamTimeout(Rejected):
    """504: the upstream did not answer within its timeout."""

    status = 504
    title = "Gateway timeout"


class Unavailable(Rejected):
    """503: a dependency (Redis, the audit spool) cannot serve this request safely right now."""

    status = 503
    title = "Service unavailable"


class Draining(Unavailable):
    """503 while shutting down: the client is sent elsewhere (the connection closes)."""

    title = "Shutting down"
    closes_connection = True  # send the client elsewhere
