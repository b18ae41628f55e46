"""Pure: an authentication event in words — "expired 3 days ago", "scope orders:write missing
for POST /v1/orders" — from the event document and, where the event needs it, the key's
expiry. For an operator answering "my key stopped working"."""

from __future__ import annotations

from collections.abc import Mapping

_SCOPE_PREFIX = "the key lacks scope "


def ago(seconds: float) -> str:
    """`3 days ago`, `5 minutes ago`, `just now`; a negative span is `in 2 hours`."""
    span = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if span >= size:
            n = int(span // size)
            words = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"{words} ago" if seconds >= 0 else f"in {words}"
    return "just now"


def reason(event: Mapping[str, object], now: float, expires_at: float | None = None) -> str:
    """The sentence for `event` (a document of the events stream) at `now`; `expires_at`: the
    key's expiry, when the event is `expired_key` and the key is known."""
    name = str(event.get("event", ""))
    request = f"{event.get('method', '')} {event.get('path', '')}".strip()
    key = event.get("key_name") or event.get("key_id")
    detail = str(event.get("detail", ""))
    if name == "expired_key":
        return "the key had expired" if expires_at is None else f"expired {ago(now - expires_at)}"
    if name == "missing_scope":
        missing = detail.removeprefix(_SCOPE_PREFIX) if detail.startswith(_SCOPE_PREFIX) else ""
        scopes = ", ".join(missing.split()) or "a scope"
        return f"scope {scopes} missing for {request}"
    sentences = {
        "missing_key": f"no key was sent with {request}",
        "malformed_key": "what was sent is not a key in this sidecar's format",
        "unknown_key": "no key with that id exists (or it was deleted)",
        "invalid_secret": f"the secret is wrong for key {key}",
        "revoked_key": f"key {key} has been revoked",
        "wrong_environment": "the key is for another environment",
        "ip_not_allowed": f"key {key} is not allowed from {event.get('client_ip', '?')}",
        "rate_limited": f"over the rate limit ({request})",
        "key_in_url": "a key was sent in the URL: refused, and the key flagged exposed",
        "key_in_header": "a key was sent in a header other than the configured one",
        "admin_key_on_proxy": "an admin key was used on the proxy port",
        "not_an_admin_key": "a proxy key was used on the admin port",
        "no_route": f"no route matches {request}",
    }
    return sentences.get(name) or (detail or name.replace("_", " "))
