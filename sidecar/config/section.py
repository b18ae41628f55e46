"""The base of every settings section, and the shapes several sections check values against."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict

# A scope (SPEC §14): `resource:action`, `resource:*` or `*`, at most 64 characters of
# [A-Za-z0-9._:-*]. Anchored with `\Z`, not `$`: `$` also matches before a trailing newline,
# and `.match` would let `orders:read\n` through.
SCOPE_SHAPE = re.compile(r"(?=.{1,64}\Z)(?:\*|[A-Za-z0-9._-]+:(?:\*|[A-Za-z0-9._-]+))\Z")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token: header and method names


class Section(BaseModel):
    """A settings section: frozen, and no key it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_ip(value: str) -> str:
    """`value` when it is an IP address; raises ValueError otherwise."""
    ipaddress.ip_address(value)  # raises ValueError with a readable message
    return value
