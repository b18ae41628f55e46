"""Loading the settings: YAML file, then the `SIDECAR_…` environment overlay, then validation.

`load_config` is the only place that reads the configuration file or `os.environ` for
settings. Every problem it finds is collected and raised together in one `ConfigError`, one
line per problem, each naming the key, so an operator fixes a config in one pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.config.settings import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ENV_DELIMITER,
    ENV_PREFIX,
    Settings,
)
from sidecar.config.url_credentials import mask_url_credentials
from sidecar.errors import ConfigError


def config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file: `--config`, else `SIDECAR_CONFIG`, else ./sidecar.yaml."""
    env = os.environ if environ is None else environ
    return Path(cli_value or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def config_named(cli_value: str | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the operator named a configuration file (then it must exist)."""
    env = os.environ if environ is None else environ
    return cli_value is not None or CONFIG_ENV in env


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Valid settings, and the warnings (one line each) about what loading them ignored."""

    settings: Settings
    warnings: list[str]


def load_settings(path: Path, *, require_file: bool = True, complete: bool = True) -> Settings:
    """Read, overlay and validate the configuration; raise `ConfigError` listing every problem.

    Validation here is about the values alone (types, ranges, required keys, readable files);
    the certificate checks live in `sidecar.runtime.tls.check_certificate` and are run by the
    callers that need a certificate. `complete=False` skips the keys a serving process must have
    (upstream, certificate): the demo and the key-management commands bring or need none.
    """
    return load_config(path, require_file=require_file, complete=complete).settings


def load_config(path: Path, *, require_file: bool = True, complete: bool = True) -> LoadedConfig:
    """`load_settings`, with the warnings a starting process reports (`serve`, `check-config`)."""
    document = _read_yaml(path, require_file=require_file)
    problems, warnings = _check_environment(os.environ)
    try:
        settings = Settings(**document)
    except ValidationError as exc:
        raise ConfigError(problems + [_describe(error) for error in exc.errors()]) from None
    if complete:
        problems += _required(settings)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(settings, warnings)


def _read_yaml(path: Path, *, require_file: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if require_file:
            raise ConfigError([f"{path}: configuration file not found"]) from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read configuration file ({exc})"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: malformed YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: malformed YAML: {exc}"]) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of config keys"])
    return document


def _describe(error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] not in ("missing",) and "input" in error:
        shown = error["input"]
        if isinstance(shown, str | int | float | bool) and key not in _SECRET_KEYS:
            # A URL that is wrong in some other way may still carry a right password.
            shown = mask_url_credentials(shown) if isinstance(shown, str) else shown
            message += f" (got {shown!r})"
    return f"{key}: {message}"


# Keys whose values are never echoed back, even inside an error message.
_SECRET_KEYS = frozenset({"redis.url", "archive.url"})


# The service links Kubernetes injects for a Service named `sidecar` (docker links had the
# same shapes): SIDECAR_SERVICE_HOST, SIDECAR_SERVICE_PORT[_<port name>], SIDECAR_PORT and
# SIDECAR_PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]. Exactly these, upper case as
# Kubernetes writes them; anything else unknown stays a typo.
_SERVICE_LINK = re.compile(
    r"SIDECAR_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_[0-9]{1,5}_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)


def _check_environment(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Problems: `SIDECAR_…` variables that name no config key, almost always a typo. Warnings:
    one line naming the Kubernetes service-link variables, which are ignored."""
    problems = _unknown_environment(environ)
    links = sorted(name for name in environ if _SERVICE_LINK.fullmatch(name))
    warnings = []
    if links:
        warnings.append(
            f"ignoring Kubernetes service-link environment variables {', '.join(links)} "
            "(set enableServiceLinks: false in the pod spec to stop them)"
        )
    return problems, warnings


def _unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """`SIDECAR_…` variables that name no config key (nor are service links): typos."""
    top_level = set(Settings.model_fields)
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        if _SERVICE_LINK.fullmatch(name):
            continue
        parts = upper[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
        if not _names_a_field(parts, top_level):
            # The name escaped: it is the operator's, but it may hold anything but `=`.
            problems.append(f"{_escaped(name)}: environment variable names no config key")
    return problems


def _escaped(name: str) -> str:
    return name if name.isprintable() else repr(name)[1:-1]


def _names_a_field(parts: list[str], top_level: set[str]) -> bool:
    if parts[0] not in top_level:
        return False
    model: Any = Settings.model_fields[parts[0]].annotation
    for part in parts[1:]:
        fields = getattr(model, "model_fields", None)
        if fields is None:
            # Optional sections (`Rate | None`) keep their model inside the union.
            for arg in getattr(model, "__args__", ()):
                fields = getattr(arg, "model_fields", None) or fields
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return True


def _required(settings: Settings) -> list[str]:
    problems = []
    if settings.upstream.url is None:
        problems.append("upstream.url: required (the service to forward to)")
    if settings.tls.cert_file is None:
        problems.append("tls.cert_file: required (the proxy port serves TLS only)")
    if settings.tls.key_file is None:
        problems.append("tls.key_file: required (the proxy port serves TLS only)")
    for key, file in (
        ("upstream.ca_file", settings.upstream.ca_file),
        ("audit.encryption_key_file", settings.audit.encryption_key_file),
        ("audit.integrity_key_file", settings.audit.integrity_key_file),
    ):
        if file is not None and not os.access(file, os.R_OK):
            problems.append(f"{key}: cannot read {file}")
    return problems
