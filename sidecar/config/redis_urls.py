"""The forms `redis.url` takes, checked and taken apart without touching the network.

- `redis://[[user]:password@]host[:port][/db]` (or `rediss://`, or `unix:///path`): one server.
  With `redis.cluster: true` it names one node of a Redis Cluster (`rediss://` for TLS); the
  client discovers the others from it. A cluster has only database 0.
- `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master_name[/db]`: the
  Sentinels to ask (port 26379 by default) for the current master of `master_name`. The
  password is the master's; `?sentinel_password=…` authenticates to the Sentinels when they
  require it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
_CLUSTER_SCHEMES = ("redis", "rediss")
_SENTINEL_OPTIONS = frozenset({"sentinel_password"})
_SECRET_OPTIONS = frozenset({"password", "sentinel_password"})


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A `redis+sentinel://` URL, taken apart."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names Redis through Sentinel (`redis+sentinel://`)."""
    return urlsplit(url).scheme == SENTINEL_SCHEME


def check_redis_url(url: str, *, cluster: bool) -> None:
    """Raise `ValueError` saying what is wrong with `url` for the given mode; never echoes
    the URL itself (it may hold a password)."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
    if scheme == SENTINEL_SCHEME:
        if cluster:
            raise ValueError("redis+sentinel:// names a Sentinel-managed master, not a cluster")
        parse_sentinel_url(url)
        return
    if cluster:
        if scheme not in _CLUSTER_SCHEMES:
            raise ValueError("a cluster is reached by a redis:// or rediss:// URL of one node")
        if urlsplit(url).path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a `redis+sentinel://` URL; `ValueError` naming the first bad part."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError("not a redis+sentinel:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    sentinels = tuple(_address(item) for item in hostlist.split(","))
    path = [unquote(segment) for segment in parts.path.split("/")[1:] if segment]
    if not path or len(path) > 2:
        raise ValueError("must name the master: redis+sentinel://host:port[,host:port]/master[/db]")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError("the database after the master name must be a number")
        db = int(path[1])
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _SENTINEL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}: only sentinel_password")
    return SentinelUrl(
        sentinels=sentinels,
        master=path[0],
        db=db,
        username=username,
        password=password,
        sentinel_password=options.get("sentinel_password") or None,
    )


def redacted_url(url: str) -> str:
    """The URL with every password (in the user part or an option) replaced by `***`, for
    logs and error messages. Works on the multi-host Sentinel form too."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostlist = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostlist}"
    query = parts.query
    if query:
        options = [
            (name, "***" if name in _SECRET_OPTIONS else value)
            for name, value in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(options, safe="*", quote_via=quote)
    return parts._replace(netloc=netloc, query=query).geturl()


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    username, colon, password = userinfo.partition(":")
    return (unquote(username) or None, unquote(password) if colon and password else None)


def _address(item: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port`."""
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError("every Sentinel needs a host: host:port[,host:port]")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("a Sentinel port must be a number from 1 to 65535")
    return host, int(port_text)
