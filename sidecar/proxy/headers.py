"""Pure header rules: hop-by-hop filtering, forwarding headers, request ids, HSTS."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from sidecar.config import Hsts
from sidecar.guard.shown import shown_header

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 9110 §7.6.1 plus the de-facto ones; each hop sets its own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Headers the upstream gets from the sidecar alone: a client copy would be a forgery.
IDENTITY_HEADERS = ("x-sidecar-key-name", "x-sidecar-key-id", "x-sidecar-scopes")

# SPEC §14: frameworks that honour these let a GET-scoped key act as DELETE, or reach a path
# other than the one the route check saw.
OVERRIDE_HEADERS = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-original-method",
    }
)

# Client-address headers that upstreams and their frameworks believe; the sidecar sends its
# own `X-Forwarded-For`, so a client copy of any of these would be a forged address.
_CLIENT_ADDRESS = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "client-ip",
        "forwarded-for",
        "x-forwarded",
        "x-remote-addr",
        "x-remote-ip",
        "x-client-addr",
    }
)

_SET_BY_PROXY = frozenset(
    {
        "host",
        "x-request-id",
        "expect",  # the sidecar answers 100-continue itself
        "authorization",
        *IDENTITY_HEADERS,
        *_CLIENT_ADDRESS,
    }
)

# Every client `X-Forwarded-*` (`-Prefix`, `-Port`, `-Uri`…) is dropped, not only the three
# the sidecar sets: frameworks build URLs and client addresses from them.
_SET_BY_PROXY_PREFIXES = ("x-forwarded-", "x-sidecar-")

_NOT_FORWARDED = HOP_BY_HOP | _SET_BY_PROXY | OVERRIDE_HEADERS

# End-to-end headers the sidecar reads or sets: `Connection` may not name them (SPEC §14),
# or the sidecar would judge a request by a header the next hop then removes.
_READ_OR_SET = _SET_BY_PROXY | {"content-type", "content-encoding", "content-length", "cookie"}
_READ_OR_SET_PREFIXES = ("content-", *_SET_BY_PROXY_PREFIXES)

# Headers the sidecar reads one value of: a second line could be what the upstream reads.
SINGLETONS = ("Content-Type", "Content-Encoding", "Host", "Authorization", "X-Request-Id")


UnderscoreMode = Literal["drop", "reject", "allow"]


_PLAIN_NAME = re.compile(r"[A-Za-z0-9-]+")
_SEPARATOR = re.compile(r"[^a-z0-9]")


def is_plain_name(name: str) -> bool:
    """Letters, digits and `-` only: a name every upstream reads the same way."""
    return _PLAIN_NAME.fullmatch(name) is not None


def header_key(name: str) -> str:
    """A header name as an upstream will read it: case-insensitive, and every character other
    than a letter or digit the same as `-` (CGI, WSGI, Django and PHP turn `X_Sidecar_Scopes`
    into the variable of `X-Sidecar-Scopes`; PHP does the same with `.`, lighttpd's CGI with
    any other character). Every filter compares names in this form."""
    lowered = name.lower()
    return lowered if is_plain_name(name) else _SEPARATOR.sub("-", lowered)


REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # fullmatch: `$` lets "\n" by


def request_id(client_value: str | None) -> str:
    """The client's `X-Request-Id` when it is a sane token, else a fresh random one."""
    if client_value is not None and _SANE_REQUEST_ID.fullmatch(client_value):
        return client_value
    return os.urandom(16).hex()


def hsts_value(hsts: Hsts) -> str:
    """The Strict-Transport-Security header value for these settings."""
    value = f"max-age={hsts.max_age}"
    if hsts.include_subdomains:
        value += "; includeSubDomains"
    if hsts.preload:
        value += "; preload"
    return value


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in `Connection` (as `header_key`s): hop-by-hop for this message."""
    return frozenset(
        header_key(token.strip()) for value in values for token in value.split(",") if token.strip()
    )


def _read_or_set(key: str) -> bool:
    return key in _READ_OR_SET or key.startswith(_READ_OR_SET_PREFIXES)


class RequestHeaderPolicy:
    """Which of a client's headers reach the upstream (SPEC §6 and §14), built once.

    Names are compared as `header_key`s, so no spelling of a header the sidecar sets or
    drops (`X_Sidecar_Scopes`, `x-SIDECAR-scopes`) gets through. `underscores` is
    `limits.headers_with_underscores`: `drop` (the default, as nginx and Envoy do) forwards
    no name with `_` (nor any other character but letters, digits and `-`: `.`, `~`, …);
    `reject` refuses the request; `allow` forwards them, except those that read as a header
    the sidecar reads, sets or drops.
    """

    def __init__(self, key_header: str | None, underscores: UnderscoreMode) -> None:
        self._key_header = header_key(key_header) if key_header is not None else None
        self._underscores = underscores
        named = {self._key_header} if self._key_header is not None else set()
        self._dropped = _NOT_FORWARDED | named
        self._protected = _READ_OR_SET | named
        self._verdicts: dict[str, bool] = {}

    def problem(self, headers: Iterable[tuple[str, str]], connection: Iterable[str]) -> str | None:
        """Why these request headers cannot be read unambiguously, or None."""
        for token in connection_tokens(connection):
            if token in self._protected or token.startswith(_READ_OR_SET_PREFIXES):
                # The client's token, in the answer and the log line: masked and bounded.
                return f"Connection may not name the end-to-end header {shown_header(token)!r}"
        if self._underscores == "reject":
            for name, _value in headers:
                if not is_plain_name(name):
                    return "header names may hold only letters, digits and -"
        return None

    def forward(
        self, headers: Iterable[tuple[str, str]], connection: Iterable[str]
    ) -> list[tuple[str, str]]:
        """The client's headers minus hop-by-hop, credentials, overrides and anything the
        proxy sets itself. Call `problem` first: this assumes the request was accepted."""
        named = connection_tokens(connection)  # usually empty
        verdicts = self._verdicts
        kept = []
        for name, value in headers:
            keep = verdicts.get(name)
            if keep is None:
                keep = self._judge(name)
                if len(verdicts) < _VERDICTS_KEPT:  # names are the client's: bounded
                    verdicts[name] = keep
            if keep and not (named and header_key(name) in named):
                kept.append((name, value))
        return kept

    def _judge(self, name: str) -> bool:
        """Whether a header of this name is forwarded (before `Connection` is applied)."""
        if not is_plain_name(name):
            if self._underscores != "allow":
                return False
            key = header_key(name)
            return not (key in self._dropped or _read_or_set(key) or key in self._protected)
        key = name.lower()
        return not (key in self._dropped or key.startswith(_SET_BY_PROXY_PREFIXES))


# The same few header names come back on every request: their verdict is kept, up to this many.
_VERDICTS_KEPT = 4096


def response_headers_to_return(
    headers: Iterable[tuple[str, str]], connection: Iterable[str]
) -> list[tuple[str, str]]:
    """The upstream's headers minus hop-by-hop ones (the proxy frames its own response)."""
    named = connection_tokens(connection)
    dropped = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def client_address(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> tuple[str, str]:
    """(client IP, `X-Forwarded-For` to send upstream).

    `forwarded_for` is every `X-Forwarded-For` line, in order: a proxy may append its own
    line rather than extend the client's (SPEC §14), so reading only the first would believe
    the address the client wrote. A client-sent chain is believed only when the peer is a
    trusted proxy; then the client is the right-most address that is not itself a trusted
    proxy. From any other peer the chain is not forwarded either.
    """
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer, peer
    chain = [hop.strip() for line in forwarded_for for hop in line.split(",") if hop.strip()]
    client = peer
    for hop in reversed(chain):
        if not _is_ip(hop):
            break  # garbage: stop believing the chain here
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return client, f"{', '.join(chain)}, {peer}" if chain else peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
