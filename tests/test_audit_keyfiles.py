"""SPEC §17 audit keys: the key file format (encryption and integrity), the integrity keys derived
from the encryption keys, and `check-config` refusing exactly what `serve` refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit.crypto import BodyCipher
from sidecar.audit.keyfiles import derive_integrity_key, derived_integrity_lines, load_audit_keys
from sidecar.audit.keylines import generate_key_line, read_key_file
from sidecar.cli.main import main
from sidecar.config import Settings
from sidecar.errors import ConfigError
from tests.helpers import run_cli, sidecar_env, write_config

ENCRYPTION = "audit.encryption_key_file"
INTEGRITY = "audit.integrity_key_file"
EXIT_OK, EXIT_USAGE = 0, 2


def key_file(tmp_path: Path, *lines: str, name: str = "audit.keys", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def raw_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def problems(path: Path, config_key: str = ENCRYPTION) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        read_key_file(path, config_key)
    for problem in raised.value.problems:
        assert problem.startswith(f"{config_key}: ")
    return raised.value.problems


def settings_with(**audit: Path) -> Settings:
    return Settings(audit={name: str(path) for name, path in audit.items()})


# -- the format -------------------------------------------------------------------------------


def test_comments_blank_lines_and_url_safe_base64(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = key_file(
        tmp_path,
        "# audit keys, newest first",
        "",
        f"  k-1 : {base64.urlsafe_b64encode(key).decode()}  ",
        f"k_0:{raw_key()}",
    )
    read = read_key_file(path, ENCRYPTION)
    assert [key_id for key_id, _ in read.keys] == ["k-1", "k_0"]
    assert read.keys[0][1] == key
    assert read.mode == 0o600
    assert not read.exposed
    cipher = BodyCipher.from_file(path)
    assert cipher.key_id == "k-1"
    token = cipher.encrypt("x", request_id="r", field="path")
    assert BodyCipher([("k-1", key)]).decrypt(token, request_id="r", field="path") == "x"


def test_generate_key_line_serves_both_files(tmp_path: Path) -> None:
    line = generate_key_line("k2026")
    key_id, encoded = line.split(":")
    assert key_id == "k2026"
    assert len(base64.b64decode(encoded, validate=True)) == 32
    assert generate_key_line("k2026") != line
    with pytest.raises(ValueError, match="key id"):
        generate_key_line("bad id")
    for config_key in (ENCRYPTION, INTEGRITY):
        assert read_key_file(key_file(tmp_path, line), config_key).keys[0][0] == "k2026"


def test_a_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.keys"
    assert problems(path) == [f"{ENCRYPTION}: cannot read {path} (No such file or directory)"]


def test_an_empty_key_file(tmp_path: Path) -> None:
    path = key_file(tmp_path, "# nothing yet", "")
    assert problems(path, INTEGRITY) == [
        f"{INTEGRITY}: {path}: holds no key (expected lines of KEY_ID:BASE64_OF_32_BYTES)"
    ]


def test_every_bad_line_is_named_and_no_key_material_is_echoed(tmp_path: Path) -> None:
    short = base64.b64encode(b"s" * 16).decode()
    bare = raw_key()
    path = key_file(
        tmp_path,
        f"good:{raw_key()}",
        bare,  # no key id
        f"bad id:{raw_key()}",
        f"short:{short}",
        "notb64:@@@@",
        f"good:{raw_key()}",
    )
    found = problems(path)
    assert found == [
        f"{ENCRYPTION}: {path}: line 2: expected KEY_ID:BASE64_OF_32_BYTES",
        f"{ENCRYPTION}: {path}: line 3: the key id must be 1-32 characters of "
        "A-Z, a-z, 0-9, '_', '-'",
        f"{ENCRYPTION}: {path}: line 4: the key is 16 bytes, not 32",
        f"{ENCRYPTION}: {path}: line 5: the key is not valid base64",
        f"{ENCRYPTION}: {path}: line 6: key id 'good' appears twice",
    ]
    text = "\n".join(found)
    assert bare not in text
    assert short not in text
    assert "@@@@" not in text


def test_a_key_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.keys"
    path.write_bytes(b"\xff\xfe\x00")
    assert problems(path) == [f"{ENCRYPTION}: cannot read {path} (not UTF-8 text)"]


def test_a_fifo_or_a_directory_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)  # reading it would block start-up forever
    assert problems(fifo) == [f"{ENCRYPTION}: cannot read {fifo} (not a regular file)"]
    assert problems(tmp_path) == [f"{ENCRYPTION}: cannot read {tmp_path} (not a regular file)"]


def test_a_huge_file_is_not_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.keys"
    path.write_bytes(b"#" * (1 << 20) + b"\n")
    assert problems(path) == [f"{ENCRYPTION}: {path}: larger than 1 MiB; not a key file"]


# -- load_audit_keys --------------------------------------------------------------------------


def hkdf_sha256(key: bytes, info: bytes) -> bytes:
    """RFC 5869 by hand (no salt: a zero salt; one block), to check the documented derivation."""
    prk = hmac.new(b"\0" * 32, key, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_integrity_keys_are_derived_from_the_encryption_keys(tmp_path: Path) -> None:
    first, second = os.urandom(32), os.urandom(32)
    path = key_file(
        tmp_path,
        f"k2026:{base64.b64encode(first).decode()}",
        f"k2025:{base64.b64encode(second).decode()}",
    )
    keys = load_audit_keys(settings_with(encryption_key_file=path))
    assert keys.cipher is not None
    assert keys.cipher.key_id == "k2026"
    assert keys.integrity is not None
    assert keys.integrity.signing_id == "k2026"  # same ids, same order: the first signs
    assert list(keys.integrity.keys) == ["k2026", "k2025"]
    assert keys.integrity.keys["k2026"] == hkdf_sha256(first, b"sidecar-audit-integrity-v1")
    assert keys.integrity.keys["k2025"] == hkdf_sha256(second, b"sidecar-audit-integrity-v1")
    assert keys.integrity.keys["k2026"] not in (first, second)
    assert keys.integrity.keys["k2026"] != keys.integrity.keys["k2025"]
    assert keys.warnings == []
    # Deterministic: every process, and `audit verify` later, derives the same keys.
    again = load_audit_keys(settings_with(encryption_key_file=path)).integrity
    assert again is not None
    assert again.keys == keys.integrity.keys
    assert derive_integrity_key(first) == keys.integrity.keys["k2026"]


def test_the_derived_keys_as_lines_for_a_separate_integrity_file(tmp_path: Path) -> None:
    encryption = key_file(tmp_path, generate_key_line("k2"), generate_key_line("k1"), name="e")
    lines = derived_integrity_lines(encryption)
    integrity = key_file(tmp_path, generate_key_line("i3"), *lines, name="mac.keys")
    derived = load_audit_keys(settings_with(encryption_key_file=encryption)).integrity
    separate = load_audit_keys(
        settings_with(encryption_key_file=encryption, integrity_key_file=integrity)
    ).integrity
    assert derived is not None
    assert separate is not None
    assert separate.signing_id == "i3"
    assert {k: separate.keys[k] for k in ("k2", "k1")} == derived.keys  # old records verify


def test_an_integrity_key_file_wins_over_derivation(tmp_path: Path) -> None:
    signing = os.urandom(32)
    encryption = key_file(tmp_path, generate_key_line("e1"), name="enc.keys")
    integrity = key_file(
        tmp_path,
        f"i2:{base64.b64encode(signing).decode()}",
        generate_key_line("i1"),
        name="mac.keys",
    )
    both = load_audit_keys(
        settings_with(encryption_key_file=encryption, integrity_key_file=integrity)
    )
    assert both.cipher is not None
    assert both.integrity is not None
    assert both.integrity.signing_id == "i2"
    assert both.integrity.keys["i2"] == signing
    alone = load_audit_keys(settings_with(integrity_key_file=integrity))
    assert alone.cipher is None
    assert alone.integrity == both.integrity


def test_no_key_file_no_keys() -> None:
    keys = load_audit_keys(Settings())
    assert (keys.cipher, keys.integrity, keys.warnings) == (None, None, [])


def test_problems_of_both_files_are_reported_together(tmp_path: Path) -> None:
    encryption = key_file(tmp_path, "nonsense", name="enc.keys")
    integrity = key_file(tmp_path, "", name="mac.keys")
    with pytest.raises(ConfigError) as raised:
        load_audit_keys(settings_with(encryption_key_file=encryption, integrity_key_file=integrity))
    assert [problem.split(":")[0] for problem in raised.value.problems] == [ENCRYPTION, INTEGRITY]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_a_key_file_others_can_read_is_a_warning(tmp_path: Path, mode: int) -> None:
    encryption = key_file(tmp_path, generate_key_line("e1"), name="enc.keys", mode=mode)
    integrity = key_file(tmp_path, generate_key_line("i1"), name="mac.keys", mode=0o400)
    keys = load_audit_keys(
        settings_with(encryption_key_file=encryption, integrity_key_file=integrity)
    )
    assert keys.cipher is not None  # used, but said
    assert keys.warnings == [
        f"{ENCRYPTION}: {encryption} is readable by group or others (mode {mode:04o});"
        " make it 0600 (chmod 600)"
    ]


# -- check-config: what serve refuses ---------------------------------------------------------


@pytest.fixture
def config_with(tmp_path: Path, cert_files: tuple[Path, Path]) -> Any:
    def build(**audit: str) -> Path:
        document = {
            "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            "upstream": {"url": "http://127.0.0.1:9"},
            "audit": audit,
        }
        return write_config(tmp_path / "sidecar.yaml", document)

    return build


def bad_key_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """(file, the problem both must name) per way a key file can be unusable."""
    not_text = tmp_path / "binary.keys"
    not_text.write_bytes(b"\xff\xfe")
    short = base64.b64encode(b"s" * 16).decode()
    bad_base64 = key_file(tmp_path, "k1:@@@@", name="b64.keys")
    wrong_length = key_file(tmp_path, f"k1:{short}", name="short.keys")
    duplicate = key_file(tmp_path, f"k1:{raw_key()}", f"k1:{raw_key()}", name="dup.keys")
    return {
        "bad base64": (bad_base64, "line 1: the key is not valid base64"),
        "wrong length": (wrong_length, "line 1: the key is 16 bytes, not 32"),
        "duplicate id": (duplicate, "line 2: key id 'k1' appears twice"),
        "empty": (key_file(tmp_path, "# none", name="empty.keys"), "holds no key"),
        "missing": (tmp_path / "absent.keys", "cannot read"),
        "a directory": (tmp_path, "not a regular file"),
        "not text": (not_text, "not UTF-8 text"),
    }


@pytest.mark.parametrize("config_key", [ENCRYPTION, INTEGRITY])
@pytest.mark.parametrize(
    "case",
    ["bad base64", "wrong length", "duplicate id", "empty", "missing", "a directory", "not text"],
)
def test_check_config_refuses_what_serve_refuses(
    tmp_path: Path,
    config_with: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config_key: str,
    case: str,
) -> None:
    for name in [name for name in os.environ if name.startswith("SIDECAR_")]:
        monkeypatch.delenv(name)
    path, named = bad_key_files(tmp_path)[case]
    field = config_key.split(".")[1]
    if case not in ("missing",):  # the loader's own check: serve runs it too, before the keys
        with pytest.raises(ConfigError) as raised:
            load_audit_keys(Settings(audit={field: str(path)}))  # what serve calls
        assert named in "\n".join(raised.value.problems)
    assert main(["check-config", "--config", str(config_with(**{field: str(path)}))]) == EXIT_USAGE
    stderr = capsys.readouterr().err
    assert f"{config_key}: " in stderr
    assert named in stderr
    assert "Traceback" not in stderr


def test_check_config_passes_good_key_files_and_warns_about_exposed_ones(
    tmp_path: Path, config_with: Any
) -> None:
    encryption = key_file(tmp_path, generate_key_line("e1"), name="enc.keys", mode=0o644)
    integrity = key_file(tmp_path, generate_key_line("i1"), name="mac.keys", mode=0o600)
    config = config_with(encryption_key_file=str(encryption), integrity_key_file=str(integrity))
    result = run_cli("check-config", "--config", str(config), "--json", env=sidecar_env())
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith('{"ok": true')
    assert result.stderr.splitlines() == [
        f"sidecar: warning: {ENCRYPTION}: {encryption} is readable by group or others"
        " (mode 0644); make it 0600 (chmod 600)"
    ]
    assert "e1:" not in result.stderr
