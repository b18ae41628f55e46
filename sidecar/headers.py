"""Pure header rules: hop-by-hop filtering, forwarding headers, request ids, HSTS."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence

from sidecar.config import Hsts

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
_SET_BY_PROXY = frozenset(
    {
        "host",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "expect",  # the sidecar answers 100-continue itself
        "authorization",
        *IDENTITY_HEADERS,
    }
)

_NOT_FORWARDED = HOP_BY_HOP | _SET_BY_PROXY

# Never in the audit record or a log line.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def request_id(client_value: str | None) -> str:
    """The client's `X-Request-Id` when it is a sane token, else a fresh random one."""
    if client_value is not None and _SANE_REQUEST_ID.match(client_value):
        return client_value
    return os.urandom(16).hex()


def hsts_value(hsts: Hsts) -> str:
    value = f"max-age={hsts.max_age}"
    if hsts.include_subdomains:
        value += "; includeSubDomains"
    if hsts.preload:
        value += "; preload"
    return value


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in `Connection`: hop-by-hop for this message only."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def request_headers_to_forward(
    headers: Iterable[tuple[str, str]],
    connection: Iterable[str],
    key_header: str | None,
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, credentials and anything the proxy sets itself."""
    named = connection_tokens(connection)  # usually empty: the fixed set is built once
    if key_header is not None:
        named = named | {key_header.lower()}  # names are compared lower-cased
    dropped = _NOT_FORWARDED | named if named else _NOT_FORWARDED
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def response_headers_to_return(
    headers: Iterable[tuple[str, str]], connection: Iterable[str]
) -> list[tuple[str, str]]:
    """The upstream's headers minus hop-by-hop ones (the proxy frames its own response)."""
    named = connection_tokens(connection)
    dropped = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def client_address(
    peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> tuple[str, str]:
    """(client IP, `X-Forwarded-For` to send upstream).

    A client-sent `X-Forwarded-For` is believed only when the peer is a trusted proxy; then
    the client is the right-most address that is not itself a trusted proxy.
    """
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer, peer
    chain = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
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
