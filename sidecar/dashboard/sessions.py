"""Server-side dashboard sessions in Redis: `{sidecar:session}:<sha256 of the id>` → the key's
id, name and scopes, the session's CSRF token and when it began; expiring `admin.session_ttl_s`
after sign-in (not sliding: a working day, then sign in again).

Only the id's digest names the Redis key, so a dump of Redis holds no cookie that would sign
anyone in. The cookie is `__Host-` (Secure, Path=/, no Domain: the browser pins it to this
origin), HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from sidecar.admin.context import AdminCaller
from sidecar.keys.records import text
from sidecar.storage.client import RedisClient

SESSION_COOKIE = "__Host-sidecar_session"
_PREFIX = "{sidecar:session}:"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in admin key, as the pages see it."""

    session_id: str
    key_id: str
    name: str
    scopes: tuple[str, ...]
    csrf: str
    created: float

    def caller(self, client_ip: str, request_id: str) -> AdminCaller:
        """The session's key as the caller of an admin action."""
        return AdminCaller(self.key_id, self.name, self.scopes, client_ip, request_id)


def _redis_key(session_id: str) -> str:
    return _PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Begins, finds and ends sessions."""

    def __init__(self, redis: RedisClient, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def begin(self, caller: AdminCaller) -> Session:
        """A new session for `caller`, kept for `ttl_s`."""
        session = Session(
            session_id=secrets.token_urlsafe(32),
            key_id=caller.key_id,
            name=caller.name,
            scopes=caller.scopes,
            csrf=secrets.token_urlsafe(32),
            created=time.time(),
        )
        fields = {
            "key_id": session.key_id,
            "name": session.name,
            "scopes": " ".join(session.scopes),
            "csrf": session.csrf,
            "created": repr(session.created),
        }
        key = _redis_key(session.session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's wide union
            pipe.expire(key, self.ttl_s)
            await pipe.execute()
        return session

    async def find(self, session_id: str) -> Session | None:
        """The live session of `session_id`; None when it ended or never was."""
        if not 16 <= len(session_id) <= 128:
            return None
        raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(_redis_key(session_id))
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        return Session(
            session_id=session_id,
            key_id=data["key_id"],
            name=data["name"],
            scopes=tuple(data["scopes"].split()),
            csrf=data["csrf"],
            created=float(data["created"]),
        )

    async def end(self, session_id: str) -> None:
        """End the session at once (sign-out, or its key revoked)."""
        await self._redis.delete(_redis_key(session_id))


def set_session_cookie(response: web.StreamResponse, session: Session, ttl_s: int) -> None:
    """Give the browser the session's cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        max_age=ttl_s,
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    """Tell the browser to forget the session's cookie."""
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
