"""Pure: the credentials a URL carries, masked wherever the URL is quoted in free text.

The upstream, Redis (one server, Sentinel, cluster) and archive (`postgresql://`) URLs may carry
a password, and a URL ends up in log lines, exception messages and config errors whole. SPEC §17:
"URL credentials (upstream, Redis, archive) are masked in every log line". This works on any text
that holds URLs, not on a parsed URL (`redis_urls.redacted_url` does that for one Redis URL):

- `scheme://user:password@host` → `scheme://user:***@host`; `scheme://:password@host` →
  `scheme://:***@host`; `scheme://token@host` (a user part alone is often a token) →
  `scheme://***@host`. The user part ends at the *last* `@` before the path, so a password with
  an unescaped `@` in it is masked whole.
- a query option named like a secret (`?password=…`, `&sentinel_password=…`, `token`, `secret`,
  `api_key`…) → `option=***`.

Cheap when a text holds no `://`: one substring test, no regex.
"""

from __future__ import annotations

import re

MASK = "***"
SEPARATOR = "://"

# The user part: anything up to the last `@` before the authority ends (a path, query or
# fragment, white space, or a quote or bracket of the text around the URL).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#'\"<>\\]*)@")
_SECRET_OPTION = re.compile(
    r"(?P<name>[?&;][\w.\-]*?(?:password|passwd|pwd|secret|token|api[_-]?key)=)[^&;#\s'\"<>]*",
    re.IGNORECASE,
)


def mask_url_credentials(text: str) -> str:
    """`text` with the password (or token) of every URL in it, and every secret-named query
    option, replaced by `***`; the same object when there is no URL in it."""
    if SEPARATOR not in text:
        return text
    masked = _USERINFO.sub(_masked_userinfo, text)
    return _SECRET_OPTION.sub(lambda match: match.group("name") + MASK, masked)


def _masked_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{match.group('scheme')}{shown}@"
