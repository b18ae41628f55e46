"""The typed, frozen settings: YAML file, then `SIDECAR_…` environment overlay, then validation.

`load_settings` is the only place that reads the configuration file or `os.environ`. Every
problem it finds is collected and raised together in one `ConfigError`, one line per problem,
each naming the key, so an operator fixes a config in one pass instead of one error at a time.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from yarl import URL

from sidecar.errors import ConfigError
from sidecar.redis_url import check_redis_url

ENV_PREFIX = "SIDECAR_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SIDECAR_CONFIG"
DEFAULT_CONFIG_PATH = Path("sidecar.yaml")

# A scope (SPEC §14): `resource:action`, `resource:*` or `*`, at most 64 characters of
# [A-Za-z0-9._:-*]. Anchored with `\Z`, not `$`: `$` also matches before a trailing newline,
# and `.match` would let `orders:read\n` through.
SCOPE_SHAPE = re.compile(r"(?=.{1,64}\Z)(?:\*|[A-Za-z0-9._-]+:(?:\*|[A-Za-z0-9._-]+))\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token: header and method names


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_ip(value: str) -> str:
    ipaddress.ip_address(value)  # raises ValueError with a readable message
    return value


class Listen(_Section):
    address: str = "0.0.0.0"
    port: int = Field(8443, ge=0, le=65535)  # 0: any free port (tests, demo)

    _address = field_validator("address")(_check_ip)


class Tls(_Section):
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("min_version", mode="before")
    @classmethod
    def _unquoted_number(cls, value: Any) -> Any:
        # `min_version: 1.2` in YAML is a float; accept it as the operator meant it.
        return (
            str(value) if isinstance(value, float | int) and not isinstance(value, bool) else value
        )


class Hsts(_Section):
    max_age: NonNegativeInt = 31536000
    include_subdomains: bool = True
    preload: bool = False

    @model_validator(mode="after")
    def _preload_rules(self) -> Hsts:
        # Browsers' preload lists reject a header that asks for preload without these.
        if self.preload and (self.max_age < 31536000 or not self.include_subdomains):
            raise ValueError("preload needs max_age >= 31536000 and include_subdomains: true")
        return self


class Health(_Section):
    address: str = "0.0.0.0"
    port: int = Field(8081, ge=0, le=65535)

    _address = field_validator("address")(_check_ip)


class Upstream(_Section):
    url: str | None = None
    connect_timeout_s: PositiveFloat = 5
    timeout_s: PositiveFloat = 60
    max_connections: PositiveInt = 100
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.query_string or url.fragment:
            raise ValueError("must not carry a query or fragment")
        return value


class Redis(_Section):
    """One server, a Sentinel-managed master or a cluster: the URL forms are in `redis_url`."""

    cluster: bool = False  # before `url`, whose check depends on it
    url: str = "redis://127.0.0.1:6379/0"
    timeout_s: PositiveFloat = 0.5

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str, info: ValidationInfo) -> str:
        cluster = bool(info.data.get("cluster", False))
        try:
            check_redis_url(value, cluster=cluster)
        except ValueError as exc:
            raise ValueError(f"{exc} (redis.cluster is true)" if cluster else str(exc)) from None
        return value


class Argon2(_Section):
    time_cost: int = Field(2, ge=1, le=20)
    memory_cost: int = Field(19456, ge=8, le=4 * 1024 * 1024)
    parallelism: int = Field(1, ge=1, le=16)


class Keys(_Section):
    prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,15}$")] = "sk"
    environment: Annotated[str, Field(pattern=r"^[a-z0-9]{1,16}$")] = "live"
    header: str | None = None
    cache_ttl_s: PositiveFloat = 30
    stale_if_error_s: NonNegativeFloat = 300
    max_age_days: PositiveInt = 365
    argon2: Argon2 = Argon2()

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _TOKEN.match(value):
            raise ValueError("must be an HTTP header name")
        if value.lower() in ("authorization", "host", "cookie", "connection"):
            raise ValueError(f"{value!r} cannot carry the API key")
        return value.lower()


class RouteMap(_Section):
    drop: list[str] = []
    rename: dict[str, str] = {}

    @field_validator("drop")
    @classmethod
    def _pointers(cls, value: list[str]) -> list[str]:
        for pointer in value:
            _check_pointer(pointer)
        return value

    @field_validator("rename")
    @classmethod
    def _pointer_pairs(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            _check_pointer(source)
            _check_pointer(target)
        return value


def _check_pointer(pointer: str) -> None:
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON Pointer (RFC 6901): it must start with '/'")


class Route(_Section):
    path: str
    methods: list[str] | None = None  # None: every method
    scopes: list[str] = []
    public: bool = False
    map: RouteMap | None = None

    @field_validator("path")
    @classmethod
    def _glob(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        for segment in value.split("/")[1:]:
            if "**" in segment and segment != "**":
                raise ValueError("'**' must be a whole segment")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one method (omit it to allow every method)")
        for method in value:
            if not _TOKEN.match(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return [method.upper() for method in value]

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not SCOPE_SHAPE.match(scope):
                raise ValueError(f"{scope!r} is not a scope: use resource:action, resource:* or *")
        return value

    @model_validator(mode="after")
    def _public_has_no_scopes(self) -> Route:
        if self.public and self.scopes:
            raise ValueError("a public route takes no scopes: nobody presents a key to it")
        return self


class Rate(_Section):
    requests: PositiveInt
    per_seconds: PositiveFloat


class RateLimits(_Section):
    per_key: Rate | None = None
    failed_auth_per_ip: Rate | None = Rate(requests=20, per_seconds=60)
    # Requests that need no key (public routes, and those no route matches) still cost an
    # audit record or an event: bounded per client address so nobody can fill Redis for free.
    unauthenticated_per_ip: Rate | None = Rate(requests=300, per_seconds=10)


GuardMode = Literal["redact", "reject", "off"]


class DataGuard(_Section):
    card_numbers: GuardMode = "redact"
    credentials: GuardMode = "redact"
    # Inspecting means holding the whole body: textual bodies above this are refused (413)
    # rather than forwarded unchecked. Binary bodies are never inspected.
    max_inspect_bytes: PositiveInt = 1048576

    @property
    def active(self) -> bool:
        return self.card_numbers != "off" or self.credentials != "off"


class Audit(_Section):
    stream: Annotated[str, Field(min_length=1)] = "sidecar:audit"
    events_stream: Annotated[str, Field(min_length=1)] = "sidecar:auth-events"
    retention_days: PositiveInt = 90
    max_body_bytes: NonNegativeInt = 65536
    spool_dir: Path = Path("spool")
    spool_max_bytes: PositiveInt = 1073741824
    encryption_key_file: Path | None = None


class Limits(_Section):
    max_body_bytes: PositiveInt = 10485760
    max_header_bytes: int = Field(16384, ge=1024, le=1048576)
    header_timeout_s: PositiveFloat = 10
    keepalive_s: PositiveFloat = 75
    max_connections: PositiveInt = 10000
    # SPEC §14: the longest wait for the next byte of a request body (408, then close).
    body_timeout_s: PositiveFloat = 30
    # SPEC §14: CGI/WSGI upstreams read `X_Foo` as `X-Foo`; nginx and Envoy drop such names.
    headers_with_underscores: Literal["drop", "reject", "allow"] = "drop"


class Shutdown(_Section):
    drain_s: NonNegativeFloat = 5
    grace_s: NonNegativeFloat = 25


class Log(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class Settings(BaseSettings):
    """Everything `sidecar` is configured with; built only by `load_settings`."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
    )

    listen: Listen = Listen()
    tls: Tls = Tls()
    hsts: Hsts = Hsts()
    health: Health = Health()
    upstream: Upstream = Upstream()
    redis: Redis = Redis()
    keys: Keys = Keys()
    routes: list[Route] = []
    default_route: Literal["deny", "authenticated"] = "deny"
    rate_limits: RateLimits = RateLimits()
    data_guard: DataGuard = DataGuard()
    audit: Audit = Audit()
    limits: Limits = Limits()
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    shutdown: Shutdown = Shutdown()
    log: Log = Log()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init kwargs; the environment wins over it.
        return env_settings, init_settings


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
    the certificate checks live in `sidecar.tls.check_certificate` and are run by the callers
    that need a certificate. `complete=False` skips the keys a serving process must have
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
            message += f" (got {shown!r})"
    return f"{key}: {message}"


# Keys whose values are never echoed back, even inside an error message.
_SECRET_KEYS = frozenset({"redis.url"})


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
    ):
        if file is not None and not os.access(file, os.R_OK):
            problems.append(f"{key}: cannot read {file}")
    return problems
