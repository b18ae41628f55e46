"""The proxy port's TLS: certificate checks at start-up and the server `SSLContext`."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sidecar.config import Tls
from sidecar.errors import ConfigError

# Mozilla "intermediate" (v5.7) TLS 1.2 suites, ECDHE only: the DHE suites would need
# operator-supplied parameters and add nothing for current clients. TLS 1.3 suites are
# OpenSSL's defaults, which are exactly Mozilla's.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class Certificate:
    """What readiness needs to know about the serving certificate."""

    subject: str
    not_after: datetime

    def valid_at(self, moment: datetime) -> bool:
        """True when the certificate has not expired at `moment`."""
        return moment < self.not_after


def check_certificate(tls: Tls, *, now: datetime | None = None) -> Certificate:
    """Read certificate and key; raise `ConfigError` unless they parse, match and are current."""
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError(["tls.cert_file and tls.key_file: required"])
    moment = now or datetime.now(UTC)
    problems: list[str] = []
    certs = _read(tls.cert_file, "tls.cert_file", problems)
    key_pem = _read(tls.key_file, "tls.key_file", problems)
    if problems:
        raise ConfigError(problems)
    assert certs is not None
    assert key_pem is not None
    try:
        leaf = x509.load_pem_x509_certificates(certs)[0]
    except ValueError:
        raise ConfigError([f"tls.cert_file: {tls.cert_file} holds no PEM certificate"]) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        # The reason is not echoed: it could quote key material.
        raise ConfigError(
            [f"tls.key_file: {tls.key_file} holds no unencrypted PEM private key"]
        ) from None
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        problems.append(
            f"tls.key_file: {tls.key_file} does not match the certificate in {tls.cert_file}"
        )
    if leaf.not_valid_after_utc <= moment:
        problems.append(
            f"tls.cert_file: certificate expired at {leaf.not_valid_after_utc.isoformat()}"
        )
    if leaf.not_valid_before_utc > moment:
        problems.append(
            f"tls.cert_file: certificate not valid before {leaf.not_valid_before_utc.isoformat()}"
        )
    if problems:
        raise ConfigError(problems)
    return Certificate(subject=leaf.subject.rfc4514_string(), not_after=leaf.not_valid_after_utc)


def create_server_context(tls: Tls) -> ssl.SSLContext:
    """A server context: TLS 1.2+ (or 1.3 only), Mozilla intermediate suites, HTTP/1.1 ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # Mozilla intermediate allows X25519, P-256 and P-384 only; Python cannot set a list of
    # groups, so it is P-256 alone: supported by every client, and fast in OpenSSL.
    context.set_ecdh_curve("prime256v1")
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([f"tls.cert_file: cannot load the certificate chain ({exc})"]) from None
    return context


def _read(path: Path, key: str, problems: list[str]) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.append(f"{key}: cannot read {path} ({exc.strerror or exc})")
        return None


def _public_bytes(public_key: object) -> bytes:
    encode = getattr(public_key, "public_bytes")  # noqa: B009 - every key type has it
    return bytes(
        encode(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
