"""`make tls-check`: run a sidecar with a certificate from a throwaway CA and let sslyze judge
it against Mozilla's "intermediate" configuration. sslyze lives in its own virtualenv
(.venv-sslyze): it pins a cryptography older than the sidecar's."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.storage.embedded import EmbeddedRedis, free_port

SSLYZE = Path(".venv-sslyze/bin/python")


def _write_ca_and_leaf(directory: Path) -> None:
    """A CA and a 90-day leaf for localhost, strictly RFC 5280 (sslyze's validator is)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sidecar tls-check CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _wait_for_port(port: int, process: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the sidecar exited at start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)  # polling a child process: nothing to await
    raise SystemExit(f"the sidecar did not listen on {port} within {within}s")


def main() -> int:
    if not SSLYZE.exists():
        print("sslyze is not installed: run `make tls-check`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sidecar-tls-check-") as temp, EmbeddedRedis() as redis:
        directory = Path(temp)
        _write_ca_and_leaf(directory)
        port = free_port()
        config = {
            "listen": {"address": "127.0.0.1", "port": port},
            "health": {"address": "127.0.0.1", "port": free_port()},
            "tls": {
                "cert_file": str(directory / "cert.pem"),
                "key_file": str(directory / "key.pem"),
            },
            "upstream": {"url": "http://127.0.0.1:9"},
            "redis": {"url": redis.url},
            "audit": {"spool_dir": str(directory / "spool")},
            "log": {"level": "warning"},
            "shutdown": {"drain_s": 0, "grace_s": 1},
        }
        (directory / "sidecar.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        sidecar = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "sidecar", "serve", "--config", str(directory / "sidecar.yaml")],
            env=env,
        )
        try:
            _wait_for_port(port, sidecar, 30)
            result = subprocess.run(  # noqa: S603
                [
                    str(SSLYZE),
                    "-m",
                    "sslyze",
                    "--mozilla_config=intermediate",
                    f"--certinfo_ca_file={directory / 'ca.pem'}",
                    f"localhost:{port}",
                ],
                check=False,
                timeout=300,
            )
        finally:
            sidecar.send_signal(signal.SIGTERM)
            sidecar.wait(timeout=10)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
