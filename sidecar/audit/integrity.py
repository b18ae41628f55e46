"""Pure: tamper evidence for stream documents (SPEC §17) — a per-writer hash chain with an HMAC.

Every document a writer appends (an audit record, an event) ends with four members the writer
adds, in this order and always last:

    …,"writer":"<16 hex>","seq":N,"prev":"<previous digest>","mac":"<key id>:<64 hex>"}

`mac` is HMAC-SHA256, with the integrity key named by its id, over the stream's name, a newline,
and the document's exact bytes with the `mac` member removed. So the MAC covers every byte of
the document, including `writer`, `seq` and `prev`, and binds it to its stream: a record cannot
be edited, moved to another stream, or forged without the key, and a deleted one leaves a gap
in its writer's sequence and a `prev` that names a document nobody can find.

A document's digest (what the next one's `prev` holds) is its MAC's hex. Without an integrity
key there is no `mac` member, and the digest is the SHA-256 of the document's bytes: deletions
still show as gaps, but anyone who can write to Redis can forge a consistent chain.
The first document of a writer has `seq` 1 and `prev` "".

Checking works on the stored bytes, never on a re-serialisation, so no JSON canonicalisation
is involved: what is verified is exactly what is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

_MAC_TAIL = re.compile(rb',"mac":"([A-Za-z0-9_-]{1,32}):([0-9a-f]{64})"\}\Z')
_CHAIN_TAIL = re.compile(
    rb',"writer":"([0-9a-f]{16})","seq":([1-9][0-9]{0,18}),"prev":"([0-9a-f]{0,64})"\Z'
)


class IntegrityError(ValueError):
    """A document whose tamper evidence is missing, malformed or wrong (the reason says which)."""


@dataclass(frozen=True, slots=True)
class IntegrityKeys:
    """HMAC keys by id: the first signs, every one verifies (rotation keeps old ones)."""

    keys: Mapping[str, bytes]
    signing_id: str

    @classmethod
    def of(cls, pairs: list[tuple[str, bytes]]) -> IntegrityKeys:
        """Keys in file order: the first one signs."""
        if not pairs:
            raise ValueError("at least one integrity key is needed")
        return cls(dict(pairs), pairs[0][0])


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a writer keeps after sealing: the stored bytes and the digest the next one chains to."""

    document: bytes
    digest: str


@dataclass(frozen=True, slots=True)
class ChainLink:
    """The tamper evidence read back from one stored document."""

    writer: str
    seq: int
    prev: str
    digest: str
    keyed: bool


def seal(
    stream: str,
    document: bytes,
    *,
    writer: str,
    seq: int,
    prev: str,
    keys: IntegrityKeys | None,
) -> Sealed:
    """`document` (a compact JSON object, ending in `}`) with `writer`, `seq`, `prev` and, when
    keyed, `mac` appended as its last members."""
    if not document.endswith(b"}") or len(document) < 2:
        raise ValueError("a sealed document is a JSON object")
    separator = b"," if document != b"{}" else b""
    chained = (
        document[:-1]
        + separator
        + f'"writer":"{writer}","seq":{seq},"prev":"{prev}"'.encode("ascii")
    )
    if keys is None:
        whole = chained + b"}"
        return Sealed(whole, hashlib.sha256(whole).hexdigest())
    mac = _mac(keys.keys[keys.signing_id], stream, chained + b"}")
    return Sealed(chained + f',"mac":"{keys.signing_id}:{mac}"}}'.encode("ascii"), mac)


def check(stream: str, document: bytes, keys: IntegrityKeys | None) -> ChainLink:
    """The chain link of a stored document, after checking its MAC (when `keys` is given);
    `IntegrityError` when the evidence is missing, malformed, made with an unknown key, or wrong.

    Without `keys`, a document carrying a `mac` is read but its MAC cannot be checked: the
    link says `keyed=False` and its digest is the MAC as written.
    """
    mac_match = _MAC_TAIL.search(document)
    body = document[: mac_match.start()] + b"}" if mac_match else document
    if not body.endswith(b"}"):
        raise IntegrityError("not a JSON object")
    chain_match = _CHAIN_TAIL.search(body, 0, len(body) - 1)
    if chain_match is None or chain_match.end() != len(body) - 1:
        raise IntegrityError("no writer/seq/prev at the end of the document")
    writer, seq, prev = (group.decode("ascii") for group in chain_match.groups())
    if mac_match is None:
        if keys is not None:
            raise IntegrityError("no mac, but an integrity key is configured")
        return ChainLink(writer, int(seq), prev, hashlib.sha256(document).hexdigest(), False)
    key_id, mac = (group.decode("ascii") for group in mac_match.groups())
    if keys is None:
        return ChainLink(writer, int(seq), prev, mac, False)
    key = keys.keys.get(key_id)
    if key is None:
        raise IntegrityError(f"signed with integrity key {key_id!r}, which the key file lacks")
    if not hmac.compare_digest(_mac(key, stream, body), mac):
        raise IntegrityError("the mac does not match (altered, forged, or from another stream)")
    return ChainLink(writer, int(seq), prev, mac, True)


def mac_text(keys: IntegrityKeys, text: bytes) -> str:
    """`key_id:hex` HMAC of `text` with the signing key: for documents that are not chained
    (retention checkpoints)."""
    return f"{keys.signing_id}:{hmac.new(keys.keys[keys.signing_id], text, 'sha256').hexdigest()}"


def check_text_mac(keys: IntegrityKeys, text: bytes, tagged: str) -> bool:
    """Whether `tagged` (`key_id:hex`, from `mac_text`) is the MAC of `text` under a known key."""
    key_id, _, mac = tagged.partition(":")
    key = keys.keys.get(key_id)
    if key is None:
        return False
    return hmac.compare_digest(hmac.new(key, text, "sha256").hexdigest(), mac)


def _mac(key: bytes, stream: str, body: bytes) -> str:
    digest = hmac.new(key, stream.encode("utf-8"), "sha256")
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()
