"""SPEC §9 and §10 through the real command line: `python -m sidecar` in a subprocess.

A bad configuration stops `serve` before any port is bound, with exit code 2 and one line per
problem naming the key; `check-config` reports the same without serving.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import (
    accepts_connections,
    free_port,
    is_listening,
    run_cli,
    sidecar_env,
    sidecar_process,
    wait_until,
    write_config,
)

EXIT_USAGE = 2
FAST_EXIT_S = 10.0  # interpreter start-up and imports included; a bound server would hang

ConfigFactory = Callable[..., Path]


@pytest.fixture
def good_config(cert_files: tuple[Path, Path], redis_server: EmbeddedRedis) -> dict[str, Any]:
    return {
        "listen": {"address": "127.0.0.1", "port": free_port()},
        "health": {"address": "127.0.0.1", "port": free_port()},
        "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
        "upstream": {"url": "http://127.0.0.1:9"},
        "redis": {"url": redis_server.url},
        "routes": [{"path": "/public/**", "public": True}],
    }


@pytest.fixture
def make_config(tmp_path: Path, good_config: dict[str, Any]) -> ConfigFactory:
    """`make_config(section={...})` writes the good config with those sections replaced."""

    def build(**sections: Any) -> Path:
        document = {**good_config}
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(document.get(name), dict):
                document[name] = {**document[name], **value}
            else:
                document[name] = value
        return write_config(tmp_path / "sidecar.yaml", document)

    return build


@pytest.fixture
def mismatched_pair(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert_a, cert_b = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    cert_file, key_file = tmp_path / "a.crt", tmp_path / "b.key"
    cert_a.cert_chain_pems[0].write_to_path(str(cert_file))
    cert_b.private_key_pem.write_to_path(str(key_file))
    return {"cert_file": str(cert_file), "key_file": str(key_file)}


@pytest.fixture
def expired_pair(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    now = datetime.now(UTC)
    cert = ca.issue_cert(
        "localhost", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    cert_file, key_file = tmp_path / "old.crt", tmp_path / "old.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return {"cert_file": str(cert_file), "key_file": str(key_file)}


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port we listen on: a sidecar that tried to bind it would fail with exit 1, not 2."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


BAD_CONFIGS = [
    pytest.param({"listen": {"prot": 1}}, ["listen.prot", "unknown key"], id="unknown-key"),
    pytest.param({"listen": {"port": "eighty"}}, ["listen.port"], id="wrong-type"),
    pytest.param({"tls": {"min_version": "1.0"}}, ["tls.min_version"], id="min-version-1.0"),
    pytest.param(
        {"tls": {"cert_file": "/nonexistent/cert.pem"}},
        ["tls.cert_file", "/nonexistent/cert.pem"],
        id="missing-certificate",
    ),
    pytest.param("mismatched", ["tls.key_file", "does not match"], id="mismatched-key"),
    pytest.param("expired", ["tls.cert_file", "expired"], id="expired-certificate"),
    pytest.param({"upstream": {"url": None}}, ["upstream.url"], id="missing-upstream"),
]


def _bad_config(
    variant: dict[str, Any] | str,
    make_config: ConfigFactory,
    mismatched_pair: dict[str, str],
    expired_pair: dict[str, str],
    **ports: dict[str, Any],
) -> Path:
    """Write the bad config `variant` names, on top of `ports` (e.g. `listen={"port": 1}`)."""
    if variant == "mismatched":
        variant = {"tls": mismatched_pair}
    elif variant == "expired":
        variant = {"tls": expired_pair}
    assert isinstance(variant, dict)
    sections: dict[str, Any] = dict(ports)
    for name, value in variant.items():
        if isinstance(value, dict) and isinstance(sections.get(name), dict):
            sections[name] = {**sections[name], **value}
        else:
            sections[name] = value
    return make_config(**sections)


def assert_usage_error(result: Any, expected: list[str]) -> None:
    assert result.returncode == EXIT_USAGE, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "expected"), BAD_CONFIGS)
def test_serve_refuses_a_bad_config_before_binding(
    make_config: ConfigFactory,
    mismatched_pair: dict[str, str],
    expired_pair: dict[str, str],
    held_port: int,
    variant: dict[str, Any] | str,
    expected: list[str],
) -> None:
    health_port = free_port()
    path = _bad_config(
        variant,
        make_config,
        mismatched_pair,
        expired_pair,
        listen={"port": held_port},
        health={"port": health_port},
    )

    started = time.monotonic()
    result = run_cli("serve", "--config", str(path), timeout=FAST_EXIT_S + 5)
    elapsed = time.monotonic() - started

    assert_usage_error(result, expected)
    assert "cannot listen" not in result.stderr  # it never got as far as binding
    assert elapsed < FAST_EXIT_S
    assert not is_listening(health_port)


@pytest.mark.slow
def test_serve_reports_malformed_yaml_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("listen:\n  port: 8443\n  address: [unclosed\nhealth: {}\n")
    result = run_cli("serve", "--config", str(path))
    assert_usage_error(result, [str(path)])
    assert f"{path}:3:" in result.stderr or f"{path}:4:" in result.stderr, result.stderr


@pytest.mark.slow
def test_serve_reports_every_problem_one_line_each(make_config: ConfigFactory) -> None:
    path = make_config(listen={"port": "eighty"}, tls={"min_version": "1.0"}, bogus=1)
    result = run_cli("serve", "--config", str(path))
    assert_usage_error(result, ["listen.port", "tls.min_version", "bogus"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    for key in ("listen.port", "tls.min_version", "bogus"):
        assert sum(line.strip().startswith(f"{key}:") for line in lines) == 1, lines


@pytest.mark.slow
def test_check_config_accepts_a_good_config(make_config: ConfigFactory) -> None:
    result = run_cli("check-config", "--config", str(make_config()))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.slow
def test_check_config_finds_the_file_through_sidecar_config(make_config: ConfigFactory) -> None:
    result = run_cli("check-config", env=sidecar_env(SIDECAR_CONFIG=str(make_config())))
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "expected"), BAD_CONFIGS[:5])
def test_check_config_refuses_a_bad_config(
    make_config: ConfigFactory,
    mismatched_pair: dict[str, str],
    expired_pair: dict[str, str],
    variant: dict[str, Any] | str,
    expected: list[str],
) -> None:
    path = _bad_config(variant, make_config, mismatched_pair, expired_pair)
    result = run_cli("check-config", "--config", str(path))
    assert_usage_error(result, expected)


@pytest.mark.slow
def test_check_config_json_on_a_good_config(make_config: ConfigFactory) -> None:
    result = run_cli("check-config", "--config", str(make_config()), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert datetime.fromisoformat(document["certificate_expires"]) > datetime.now(UTC)


@pytest.mark.slow
def test_check_config_json_on_a_bad_config(make_config: ConfigFactory) -> None:
    path = make_config(listen={"port": "eighty"}, bogus=1)
    result = run_cli("check-config", "--config", str(path), "--json")
    assert result.returncode == EXIT_USAGE
    document = json.loads(result.stdout)
    assert document["ok"] is False
    named = {problem.split(":", 1)[0] for problem in document["problems"]}
    assert named == {"listen.port", "bogus"}


@pytest.mark.slow
def test_unknown_sidecar_variable_fails_check_config(make_config: ConfigFactory) -> None:
    result = run_cli(
        "check-config", "--config", str(make_config()), env=sidecar_env(SIDECAR_FOO="1")
    )
    assert_usage_error(result, ["SIDECAR_FOO"])


@pytest.mark.slow
def test_kubernetes_service_links_are_one_warning_for_check_config(
    make_config: ConfigFactory,
) -> None:
    links = {
        "SIDECAR_SERVICE_HOST": "10.96.0.12",
        "SIDECAR_SERVICE_PORT": "8443",
        "SIDECAR_PORT": "tcp://10.96.0.12:8443",
        "SIDECAR_PORT_8443_TCP": "tcp://10.96.0.12:8443",
        "SIDECAR_PORT_8443_TCP_PROTO": "tcp",
        "SIDECAR_PORT_8443_TCP_PORT": "8443",
        "SIDECAR_PORT_8443_TCP_ADDR": "10.96.0.12",
    }
    config = str(make_config())
    result = run_cli("check-config", "--config", config, "--json", env=sidecar_env(**links))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    (line,) = result.stderr.splitlines()
    assert line.startswith("sidecar: warning: ignoring Kubernetes service-link")
    assert all(name in line for name in links)

    typo = run_cli(
        "check-config", "--config", config, env=sidecar_env(**links, SIDECAR_UPSTREAM__ULR="x")
    )
    assert_usage_error(typo, ["SIDECAR_UPSTREAM__ULR"])


@pytest.mark.slow
async def test_serve_starts_with_service_links_and_warns_once(
    make_config: ConfigFactory, good_config: dict[str, Any], tmp_path: Path
) -> None:
    config = make_config(audit={"spool_dir": str(tmp_path / "spool")})
    output = tmp_path / "serve.log"
    links = {"SIDECAR_SERVICE_HOST": "10.96.0.12", "SIDECAR_PORT_8443_TCP_PORT": "8443"}
    async with sidecar_process(config, output, **links) as sidecar:
        health_port = good_config["health"]["port"]

        async def serving() -> bool:
            assert sidecar.process.returncode is None, sidecar.log()
            return await accepts_connections(health_port)

        await wait_until(serving, within=FAST_EXIT_S)
        sidecar.process.terminate()
        await sidecar.wait_exit(FAST_EXIT_S)
    warnings = [line for line in output.read_text().splitlines() if "service-link" in line]
    assert len(warnings) == 1, output.read_text()
    assert "SIDECAR_SERVICE_HOST" in warnings[0]
    assert "SIDECAR_PORT_8443_TCP_PORT" in warnings[0]
    assert "warning" in warnings[0]


@pytest.mark.slow
def test_options_before_the_command_are_honoured(make_config: ConfigFactory) -> None:
    result = run_cli("--config", str(make_config()), "--json", "check-config")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
