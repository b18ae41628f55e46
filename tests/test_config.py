"""SPEC §9: YAML plus environment overlay, every problem reported at once, naming its key.

Also the certificate checks of `sidecar.runtime.tls.check_certificate` (missing, mismatched,
expired).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from sidecar.config import Settings, Tls, load_config, load_settings
from sidecar.errors import ConfigError
from sidecar.runtime.tls import check_certificate


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIDECAR_… variable from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SIDECAR_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as failure:
        load_settings(path, complete=False)
    return failure.value.problems


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "upstream: {url: 'http://127.0.0.1:9000', timeout_s: 3}\n"
        "tls: {min_version: '1.3'}\n"
        "routes:\n  - {path: /v1/**, scopes: ['orders:read']}\n",
    )
    settings = load_settings(path, complete=False)
    assert settings.upstream.url == "http://127.0.0.1:9000"
    assert settings.upstream.timeout_s == 3
    assert settings.tls.min_version == "1.3"
    assert settings.routes[0].scopes == ["orders:read"]
    assert settings.listen.port == 8443  # untouched keys keep the documented defaults


def test_unknown_key_is_named(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "listen: {port: 8443, prot: 1}\n")) == [
        "listen.prot: unknown key"
    ]


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "upsteam: {url: 'http://x'}\n")) == ["upsteam: unknown key"]


def test_wrong_type_is_named(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "listen: {port: eighty}\n"))
    assert problem.startswith("listen.port: ")
    assert "integer" in problem


@pytest.mark.parametrize("version", ["'1.0'", "'1.1'", "1.0", "1.1"])
def test_min_version_below_1_2_is_refused(tmp_path: Path, version: str) -> None:
    [problem] = problems_of(write(tmp_path, f"tls: {{min_version: {version}}}\n"))
    assert problem.startswith("tls.min_version: ")


@pytest.mark.parametrize("version", ["'1.2'", "1.2", "'1.3'", "1.3"])
def test_min_version_1_2_and_1_3_are_accepted(tmp_path: Path, version: str) -> None:
    settings = load_settings(write(tmp_path, f"tls: {{min_version: {version}}}\n"), complete=False)
    assert settings.tls.min_version == version.strip("'")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "listen:\n  port: 8443\n  address: [unclosed\nhealth: {}\n")
    [problem] = problems_of(path)
    assert str(path) in problem
    assert f"{path}:4:" in problem or f"{path}:3:" in problem, problem
    assert "YAML" in problem


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as failure:
        load_settings(tmp_path / "absent.yaml")
    assert str(tmp_path / "absent.yaml") in failure.value.problems[0]


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "upstream: {url: 'http://from-yaml:1', timeout_s: 3}\n")
    monkeypatch.setenv("SIDECAR_UPSTREAM__URL", "http://from-env:2")
    settings = load_settings(path, complete=False)
    assert settings.upstream.url == "http://from-env:2"
    assert settings.upstream.timeout_s == 3  # the YAML's other keys in that section survive


def test_environment_sets_keys_absent_from_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_REDIS__URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("SIDECAR_LIMITS__MAX_BODY_BYTES", "2048")
    settings = load_settings(write(tmp_path, ""), complete=False)
    assert settings.redis.url == "redis://127.0.0.1:6390/2"
    assert settings.limits.max_body_bytes == 2048


def test_wrong_type_from_the_environment_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_LISTEN__PORT", "eighty")
    [problem] = problems_of(write(tmp_path, ""))
    assert problem.startswith("listen.port: ")


def test_unknown_sidecar_environment_variable_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_FOO", "1")
    problems = problems_of(write(tmp_path, ""))
    assert any(problem.startswith("SIDECAR_FOO: ") for problem in problems), problems


SERVICE_LINKS = {
    "SIDECAR_SERVICE_HOST": "10.96.0.12",
    "SIDECAR_SERVICE_PORT": "8443",
    "SIDECAR_SERVICE_PORT_HTTPS": "8443",
    "SIDECAR_SERVICE_PORT_HEALTH_HTTP": "8081",
    "SIDECAR_PORT": "tcp://10.96.0.12:8443",
    "SIDECAR_PORT_8443_TCP": "tcp://10.96.0.12:8443",
    "SIDECAR_PORT_8443_TCP_PROTO": "tcp",
    "SIDECAR_PORT_8443_TCP_PORT": "8443",
    "SIDECAR_PORT_8443_TCP_ADDR": "10.96.0.12",
    "SIDECAR_PORT_53_UDP": "udp://10.96.0.12:53",
    "SIDECAR_PORT_9_SCTP_ADDR": "10.96.0.12",
}


def test_kubernetes_service_links_are_ignored_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)
    loaded = load_config(write(tmp_path, "listen: {port: 9443}\n"), complete=False)
    assert loaded.settings.listen.port == 9443  # SIDECAR_PORT does not set listen.port
    (warning,) = loaded.warnings
    for name in SERVICE_LINKS:
        assert name in warning
    assert "\n" not in warning
    assert isinstance(load_settings(write(tmp_path, ""), complete=False), Settings)


def test_no_service_links_no_warning(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), complete=False).warnings == []


@pytest.mark.parametrize(
    "name",
    [
        "SIDECAR_UPSTREAM__ULR",
        "SIDECAR_PORT_8443",
        "SIDECAR_PORT_8443_HTTP",
        "SIDECAR_PORT_8443_TCP_HOST",
        "SIDECAR_PORT_X_TCP",
        "SIDECAR_PORT_123456_TCP",
        "SIDECAR_SERVICE_HOSTS",
        "SIDECAR_SERVICE",
        "sidecar_service_host",
        "SIDECAR_PORT_8443_TCP\n",
    ],
)
def test_what_is_not_exactly_a_service_link_stays_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("SIDECAR_SERVICE_HOST", "10.96.0.12")
    monkeypatch.setenv(name, "x")
    problems = problems_of(write(tmp_path, ""))
    assert problems[0] == f"{name!r}"[1:-1] + ": environment variable names no config key"


def test_config_path_variable_is_not_an_unknown_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_CONFIG", str(tmp_path / "sidecar.yaml"))
    assert isinstance(load_settings(write(tmp_path, ""), complete=False), Settings)


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_FOO", "1")
    path = write(
        tmp_path,
        "bogus: 1\n"
        "listen: {port: eighty}\n"
        "tls: {min_version: '1.0'}\n"
        "default_route: allow\n"
        "keys: {environment: 'Not Valid'}\n",
    )
    problems = problems_of(path)
    named = {problem.split(":", 1)[0] for problem in problems}
    assert named >= {
        "SIDECAR_FOO",
        "bogus",
        "listen.port",
        "tls.min_version",
        "default_route",
        "keys.environment",
    }
    assert len(problems) >= 6
    assert all("\n" not in problem for problem in problems)  # one line per problem


def test_serving_requires_upstream_and_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as failure:
        load_settings(write(tmp_path, ""))
    named = {problem.split(":", 1)[0] for problem in failure.value.problems}
    assert named == {"upstream.url", "tls.cert_file", "tls.key_file"}


# Certificates: `sidecar.runtime.tls.check_certificate`.


def _pair(
    directory: Path, name: str, cert: trustme.LeafCert, key: trustme.LeafCert | None = None
) -> Tls:
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    (key or cert).private_key_pem.write_to_path(str(key_file))
    return Tls(cert_file=cert_file, key_file=key_file)


def test_a_matching_current_certificate_passes(ca: trustme.CA, tmp_path: Path) -> None:
    tls = _pair(tmp_path, "good", ca.issue_cert("localhost"))
    certificate = check_certificate(tls)
    assert certificate.not_after > datetime.now(UTC)
    assert certificate.valid_at(datetime.now(UTC))


def test_missing_certificate_file_is_named(ca: trustme.CA, tmp_path: Path) -> None:
    tls = _pair(tmp_path, "good", ca.issue_cert("localhost"))
    missing = Tls(cert_file=tmp_path / "absent.crt", key_file=tls.key_file)
    with pytest.raises(ConfigError) as failure:
        check_certificate(missing)
    [problem] = failure.value.problems
    assert problem.startswith("tls.cert_file: ")
    assert "absent.crt" in problem


def test_missing_key_and_certificate_files_are_both_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as failure:
        check_certificate(Tls(cert_file=tmp_path / "no.crt", key_file=tmp_path / "no.key"))
    named = [problem.split(":", 1)[0] for problem in failure.value.problems]
    assert named == ["tls.cert_file", "tls.key_file"]


def test_certificate_and_key_that_do_not_match_are_refused(ca: trustme.CA, tmp_path: Path) -> None:
    tls = _pair(tmp_path, "mixed", ca.issue_cert("localhost"), key=ca.issue_cert("localhost"))
    with pytest.raises(ConfigError) as failure:
        check_certificate(tls)
    [problem] = failure.value.problems
    assert problem.startswith("tls.key_file: ")
    assert "does not match" in problem


def test_expired_certificate_is_refused(ca: trustme.CA, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = ca.issue_cert(
        "localhost", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    with pytest.raises(ConfigError) as failure:
        check_certificate(_pair(tmp_path, "expired", expired))
    [problem] = failure.value.problems
    assert problem.startswith("tls.cert_file: ")
    assert "expired" in problem


def test_certificate_not_yet_valid_is_refused(ca: trustme.CA, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    future = ca.issue_cert(
        "localhost", not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
    )
    with pytest.raises(ConfigError) as failure:
        check_certificate(_pair(tmp_path, "future", future))
    assert [problem.split(":", 1)[0] for problem in failure.value.problems] == ["tls.cert_file"]


def test_a_file_without_a_certificate_is_refused(ca: trustme.CA, tmp_path: Path) -> None:
    tls = _pair(tmp_path, "good", ca.issue_cert("localhost"))
    assert tls.cert_file is not None
    tls.cert_file.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as failure:
        check_certificate(tls)
    assert failure.value.problems[0].startswith("tls.cert_file: ")


def test_a_bad_redis_url_is_named_without_its_password(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "redis: {url: 'ftp://user:hunter2@db:6379/0'}\n"))
    assert problem.startswith("redis.url: ")
    assert "hunter2" not in problem
