"""Pure units of the key format (SPEC §4, `sidecar.keys.format`): generated keys, their
checksum and parsing, and argon2id hashing of the secret. No I/O."""

from __future__ import annotations

import contextlib
import math
import secrets
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import Argon2
from sidecar.keys import format as keys_module
from sidecar.keys.format import (
    BASE62,
    KEY_PATTERN,
    MalformedKey,
    checksum,
    generate_key,
    parse_key,
)
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.records import KeyRecord
from sidecar.keys.store import NewKey
from tests.keysupport import FAST_ARGON2

PREFIXES = st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True)
ENVIRONMENTS = st.from_regex(r"[a-z0-9]{1,16}", fullmatch=True)


def split_key(key: str) -> tuple[str, str, str, str, str]:
    """(prefix, environment, id, secret, checksum) read off the documented layout."""
    prefix, environment, key_id, tail = key.split("_")
    return prefix, environment, key_id, tail[:-6], tail[-6:]


# --- the key format -----------------------------------------------------------------------


def test_generated_key_parses_back_to_its_parts() -> None:
    key, parsed = generate_key("sk", "live")
    prefix, environment, key_id, secret, check = split_key(key)
    assert (prefix, environment) == ("sk", "live")
    again = parse_key(key, "sk")
    assert again == parsed
    assert again.key_id == key_id
    assert again.secret == secret + check  # the argon2 hash covers the secret with its checksum
    assert check == checksum(key[:-6])
    assert KEY_PATTERN.search(key)
    assert KEY_PATTERN.fullmatch(key)


def test_id_has_at_least_64_and_secret_at_least_256_random_bits() -> None:
    key, _ = generate_key("sk", "live")
    _, _, key_id, secret, _ = split_key(key)
    assert set(key_id) <= set(BASE62)
    assert set(secret) <= set(BASE62)
    # What the encoding can carry...
    assert len(key_id) * math.log2(62) >= 64
    assert len(secret) * math.log2(62) >= 256


def test_generation_draws_enough_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and what is actually drawn from the CSPRNG for each part."""
    drawn: list[int] = []
    real = secrets.token_bytes

    def recording(n: int) -> bytes:
        drawn.append(n)
        return real(n)

    monkeypatch.setattr(secrets, "token_bytes", recording)
    generate_key("sk", "live")
    assert len(drawn) == 2
    id_bytes, secret_bytes = drawn
    assert id_bytes * 8 >= 64
    assert secret_bytes * 8 >= 256


def test_generated_ids_and_secrets_vary_in_every_position() -> None:
    parts = [split_key(generate_key("sk", "live")[0]) for _ in range(300)]
    ids = [part[2] for part in parts]
    key_secrets = [part[3] for part in parts]
    assert len(set(ids)) == len(ids)
    assert len(set(key_secrets)) == len(key_secrets)
    for column in zip(*ids, strict=True):
        assert len(set(column)) > 1
    for column in zip(*key_secrets, strict=True):
        assert len(set(column)) > 1


def test_every_single_character_change_is_refused() -> None:
    key, _ = generate_key("sk", "live")
    start = len("sk_live_")
    for position in range(start, len(key)):
        if key[position] == "_":
            continue
        for replacement in ("0", "z"):
            if replacement == key[position]:
                continue
            changed = key[:position] + replacement + key[position + 1 :]
            with pytest.raises(MalformedKey):
                parse_key(changed, "sk")


def test_changed_environment_breaks_the_checksum() -> None:
    key, _ = generate_key("sk", "staging")
    with pytest.raises(MalformedKey, match="checksum"):
        parse_key(key.replace("_staging_", "_live_", 1), "sk")


def test_wrong_prefix_is_refused() -> None:
    key, _ = generate_key("pk", "live")
    with pytest.raises(MalformedKey, match="prefix"):
        parse_key(key, "sk")
    assert parse_key(key, "pk").prefix == "pk"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k + "\n",
        lambda k: " " + k,
        lambda k: k + " ",
        lambda k: k[:-1],
        lambda k: k + "0",
        lambda k: k.upper(),
        lambda k: "",
        lambda k: k.replace("_", "-"),
    ],
    ids=[
        "trailing-newline",
        "leading-space",
        "trailing-space",
        "short",
        "long",
        "upper",
        "empty",
        "dashes",
    ],
)
def test_malformed_shapes_are_refused(mangle: object) -> None:
    key, _ = generate_key("sk", "live")
    assert callable(mangle)
    with pytest.raises(MalformedKey):
        parse_key(mangle(key), "sk")


def test_trailing_newline_is_refused_for_its_shape_not_by_checksum_luck() -> None:
    key, _ = generate_key("sk", "live")
    with pytest.raises(MalformedKey, match="well-formed"):
        parse_key(key + "\n", "sk")


def test_repr_and_errors_never_contain_the_secret() -> None:
    key, parsed = generate_key("sk", "live")
    _, _, key_id, secret, check = split_key(key)
    record = KeyRecord(
        key_id=key_id,
        name="n",
        hash=SecretHasher(Argon2(**FAST_ARGON2)).hash(parsed.secret),
        scopes=("a:b",),
        environment="live",
        created_at=0.0,
    )
    shown = [repr(parsed), str(parsed), f"{parsed!r}", repr(NewKey(key=key, record=record))]
    for text in shown:
        assert secret not in text
        assert check not in text
        assert key not in text
    assert key_id in repr(parsed)  # the public id may appear: it is what logs carry
    assert record.hash not in repr(record)
    for broken in (key[:-1] + ("0" if key[-1] != "0" else "1"), key + "x", key[:40]):
        with pytest.raises(MalformedKey) as caught:
            parse_key(broken, "sk")
        assert secret[:8] not in str(caught.value)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parse_key_raises_only_malformed_key_on_any_text(text: str) -> None:
    with contextlib.suppress(MalformedKey):
        parse_key(text, "sk")


@settings(max_examples=300, deadline=None)
@given(st.from_regex(KEY_PATTERN, fullmatch=True))
def test_parse_key_raises_only_malformed_key_on_key_shaped_text(text: str) -> None:
    try:
        parsed = parse_key(text, "sk")
    except MalformedKey:
        return
    # Accepted only when the checksum really matches.
    assert text[-6:] == checksum(text[:-6])
    assert parsed.prefix == "sk"


@settings(max_examples=200, deadline=None)
@given(PREFIXES, ENVIRONMENTS)
def test_every_generated_key_parses(prefix: str, environment: str) -> None:
    key, parsed = generate_key(prefix, environment)
    assert parse_key(key, prefix) == parsed
    assert parsed.environment == environment
    assert KEY_PATTERN.search(key)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_checksum_alphabet_and_width(value: int) -> None:
    encoded = keys_module.encode_base62(value, 6)
    assert len(encoded) == 6
    assert set(encoded) <= set(string.ascii_letters + string.digits)


# --- argon2id -----------------------------------------------------------------------------


def test_default_argon2_parameters_are_the_owasp_minimum() -> None:
    hasher = SecretHasher(Argon2())
    _, parsed = generate_key("sk", "live")
    stored = hasher.hash(parsed.secret)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert parsed.secret not in stored
    assert hasher.verify(stored, parsed.secret)
    other = "y" if parsed.secret.endswith("x") else "x"  # a different secret, always
    assert not hasher.verify(stored, parsed.secret[:-1] + other)


def test_verify_is_false_for_an_unusable_hash_and_rehash_follows_parameters() -> None:
    fast = SecretHasher(Argon2(**FAST_ARGON2))
    stored = fast.hash("s3")
    assert fast.verify(stored, "s3")
    assert not fast.verify("not-a-hash", "s3")
    assert not fast.verify("", "s3")
    assert not fast.needs_rehash(stored)
    assert SecretHasher(Argon2(time_cost=2, memory_cost=1024, parallelism=1)).needs_rehash(stored)
