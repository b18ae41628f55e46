"""The one table that turns a `Rejected` into an `application/problem+json` response."""

from __future__ import annotations

import json

from aiohttp import web

from sidecar.errors import AuthenticationFailed, MissingKey, MissingScope, Rejected

PROBLEM_JSON = "application/problem+json"
REALM = 'Bearer realm="sidecar"'
# The client-facing problem type of events a client must not tell apart: an unknown id and a
# wrong secret answer alike, or a guesser could enumerate key ids. The events stream keeps both.
_PUBLIC_EVENT = {"invalid_secret": "unknown_key"}


def www_authenticate(exc: Rejected) -> str | None:
    """The `WWW-Authenticate` challenge SPEC §6 asks for, or None."""
    if isinstance(exc, MissingKey):
        return REALM
    if isinstance(exc, AuthenticationFailed):
        challenge = f'{REALM}, error="invalid_token"'
        if exc.event == "expired_key":
            challenge += ', error_description="key expired"'
        return challenge
    if isinstance(exc, MissingScope):
        return f'{REALM}, error="insufficient_scope", scope="{" ".join(exc.scopes)}"'
    return None


def problem_response(exc: Rejected, request_id: str) -> web.Response:
    """The response for a request the proxy answers itself: status, problem body, challenge,
    `Retry-After`, the exception's extra headers, and whether the connection closes."""
    kind = _PUBLIC_EVENT.get(exc.event, exc.event) if exc.event is not None else exc.status
    body = {
        "type": f"urn:sidecar:problem:{kind}",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "request_id": request_id,
    }
    response = web.Response(
        status=exc.status, body=json.dumps(body).encode(), content_type=PROBLEM_JSON
    )
    challenge = www_authenticate(exc)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    response.headers.update(exc.headers)
    if exc.closes_connection:
        response.force_close()
    return response
