"""CSRF tokens: every form carries one (field `csrf`), checked on every POST.

Signed in, the token is the session's own (kept server-side with it). Before sign-in there is no
session, so the sign-in form's token is double-submitted: the same random value in a `__Host-`
cookie (which another origin can neither read nor set) and in the form, compared in constant
time.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from sidecar.errors import Rejected

LOGIN_COOKIE = "__Host-sidecar_login"
FIELD = "csrf"


class CsrfRefused(Rejected):
    """403: the form's CSRF token is missing or not this browser's."""

    status = 403
    title = "Forbidden"


def new_token() -> str:
    """A fresh unguessable token."""
    return secrets.token_urlsafe(32)


def check(expected: str | None, presented: object) -> None:
    """Raise `CsrfRefused` unless `presented` is the non-empty `expected` token."""
    if (
        not expected
        or not isinstance(presented, str)
        or not hmac.compare_digest(expected.encode(), presented.encode())
    ):
        raise CsrfRefused("the form's CSRF token is missing or wrong; reload the page")


def set_login_cookie(response: web.StreamResponse, token: str) -> None:
    """The sign-in form's cookie half (a few minutes are plenty to paste a key)."""
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=900, path="/", secure=True, httponly=True, samesite="Strict"
    )
