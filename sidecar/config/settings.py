"""The typed, frozen settings: one model per section, validated field by field.

The routes' sections are in `sidecar.config.routes`, the shapes they share in
`sidecar.config.section`. Built only by `sidecar.config.load`; everything else receives a
`Settings` and never reads the environment or the file itself.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from yarl import URL

from sidecar.config.redis_urls import check_redis_url
from sidecar.config.routes import Route
from sidecar.config.section import TOKEN, Section, check_ip

ENV_PREFIX = "SIDECAR_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SIDECAR_CONFIG"
DEFAULT_CONFIG_PATH = Path("sidecar.yaml")


class Listen(Section):
    """`listen`: the proxy port's address."""

    address: str = "0.0.0.0"
    port: int = Field(8443, ge=0, le=65535)  # 0: any free port (tests, demo)

    _address = field_validator("address")(check_ip)


class Tls(Section):
    """`tls`: the proxy port's certificate and minimum TLS version."""

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


class Hsts(Section):
    """`hsts`: the Strict-Transport-Security header every response carries."""

    max_age: NonNegativeInt = 31536000
    include_subdomains: bool = True
    preload: bool = False

    @model_validator(mode="after")
    def _preload_rules(self) -> Hsts:
        # Browsers' preload lists reject a header that asks for preload without these.
        if self.preload and (self.max_age < 31536000 or not self.include_subdomains):
            raise ValueError("preload needs max_age >= 31536000 and include_subdomains: true")
        return self


class Health(Section):
    """`health`: the plain-HTTP port of /healthz, /readyz and /metrics."""

    address: str = "0.0.0.0"
    port: int = Field(8081, ge=0, le=65535)

    _address = field_validator("address")(check_ip)


class Admin(Section):
    """`admin`: the admin API's TLS port (SPEC §16), off unless enabled."""

    enabled: bool = False
    # Loopback by default: the admin API manages keys, so reaching it from elsewhere is a
    # choice an operator makes, not one a default makes for them.
    address: str = "127.0.0.1"
    port: int = Field(8444, ge=0, le=65535)  # 0: any free port (tests)
    session_ttl_s: PositiveInt = 28800  # the dashboard's sign-in lasts a working day

    _address = field_validator("address")(check_ip)


class Upstream(Section):
    """`upstream`: the service requests are forwarded to, and how."""

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


class Redis(Section):
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


class Argon2(Section):
    """`keys.argon2`: the cost of hashing a key's secret."""

    time_cost: int = Field(2, ge=1, le=20)
    memory_cost: int = Field(19456, ge=8, le=4 * 1024 * 1024)
    parallelism: int = Field(1, ge=1, le=16)
    # The budget of argon2 time per process (see `keys.budget`): verifications for known ids
    # may use at most this share of the usable CPUs, and those from addresses with no failed
    # attempt in their `failed_auth_per_ip` window may dip `reserve_s` CPU-seconds further.
    max_cpu_share: float = Field(0.5, gt=0, le=1)
    reserve_s: float = Field(0.5, ge=0, le=60)


class Keys(Section):
    """`keys`: the key format, the credential header, the cache of verified keys."""

    prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,15}$")] = "sk"
    environment: Annotated[str, Field(pattern=r"^[a-z0-9]{1,16}$")] = "live"
    header: str | None = None
    cache_ttl_s: PositiveFloat = 30
    stale_if_error_s: NonNegativeFloat = 300
    max_age_days: PositiveInt = 365
    # How long an id Redis does not hold is answered `unknown_key` without asking Redis again
    # (0: never); key creation announces its id, so a new key works at once anyway.
    unknown_id_cache_s: float = Field(5, ge=0, le=300)
    argon2: Argon2 = Argon2()

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not TOKEN.match(value):
            raise ValueError("must be an HTTP header name")
        if value.lower() in ("authorization", "host", "cookie", "connection"):
            raise ValueError(f"{value!r} cannot carry the API key")
        return value.lower()


class Rate(Section):
    """A rate: `requests` per `per_seconds`."""

    requests: PositiveInt
    per_seconds: PositiveFloat


class RateLimits(Section):
    """`rate_limits`: per key; per address for failed authentication and keyless requests."""

    per_key: Rate | None = None
    failed_auth_per_ip: Rate | None = Rate(requests=20, per_seconds=60)
    # Requests that need no key (public routes, and those no route matches) still cost an
    # audit record or an event: bounded per client address so nobody can fill Redis for free.
    unauthenticated_per_ip: Rate | None = Rate(requests=300, per_seconds=10)


GuardMode = Literal["redact", "reject", "off"]


class DataGuard(Section):
    """`data_guard`: what is done with card numbers and credential fields in request bodies."""

    card_numbers: GuardMode = "redact"
    credentials: GuardMode = "redact"
    # Inspecting means holding the whole body: textual bodies above this are refused (413)
    # rather than forwarded unchecked. Binary bodies are never inspected.
    max_inspect_bytes: PositiveInt = 1048576

    @property
    def active(self) -> bool:
        """Whether either kind is looked for."""
        return self.card_numbers != "off" or self.credentials != "off"


class Audit(Section):
    """`audit`: the streams, retention, body capture, spool, encryption and integrity keys of
    the audit trail."""

    stream: Annotated[str, Field(min_length=1)] = "sidecar:audit"
    events_stream: Annotated[str, Field(min_length=1)] = "sidecar:auth-events"
    retention_days: PositiveInt = 90
    max_body_bytes: NonNegativeInt = 65536
    spool_dir: Path = Path("spool")
    spool_max_bytes: PositiveInt = 1073741824
    encryption_key_file: Path | None = None
    # The HMAC keys of the tamper evidence (SPEC §17); unset: derived from the encryption keys.
    integrity_key_file: Path | None = None


class Archive(Section):
    """`archive`: the PostgreSQL the audit streams are copied into (SPEC §15); unset, nothing
    is archived and Redis keeps the streams for `audit.retention_days` as before."""

    url: str | None = None  # postgresql://user:password@host:5432/db (libpq options allowed)
    # What stays in Redis once archived: the newest records read without a database round trip.
    redis_window_s: PositiveInt = 3600
    batch: int = Field(500, ge=1, le=10000)  # entries per XREADGROUP and per INSERT
    timeout_s: PositiveFloat = 10  # connect and statement timeout
    # A pending entry idle this long is claimed by another replica: its reader died mid-batch.
    claim_idle_s: PositiveFloat = 60

    @field_validator("url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # libpq takes both schemes; anything else (a Redis URL pasted here) fails at load time,
        # with a message of our own: a parser's could quote the password.
        try:
            scheme = URL(value).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// or postgres:// URL")
        return value


class Limits(Section):
    """`limits`: sizes, timeouts and connection counts of the proxy port."""

    max_body_bytes: PositiveInt = 10485760
    max_header_bytes: int = Field(16384, ge=1024, le=1048576)
    header_timeout_s: PositiveFloat = 10
    keepalive_s: PositiveFloat = 75
    max_connections: PositiveInt = 10000
    # SPEC §14: the longest wait for the next byte of a request body (408, then close).
    body_timeout_s: PositiveFloat = 30
    # SPEC §14: CGI/WSGI upstreams read `X_Foo` as `X-Foo`; nginx and Envoy drop such names.
    headers_with_underscores: Literal["drop", "reject", "allow"] = "drop"


class Shutdown(Section):
    """`shutdown`: how long SIGTERM drains, then how long requests in flight may finish."""

    drain_s: NonNegativeFloat = 5
    grace_s: NonNegativeFloat = 25


class Log(Section):
    """`log`: level and format of the process's log lines."""

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
    admin: Admin = Admin()
    upstream: Upstream = Upstream()
    redis: Redis = Redis()
    keys: Keys = Keys()
    routes: list[Route] = []
    default_route: Literal["deny", "authenticated"] = "deny"
    rate_limits: RateLimits = RateLimits()
    data_guard: DataGuard = DataGuard()
    audit: Audit = Audit()
    archive: Archive = Archive()
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
        """The environment first, then the YAML document (given as init arguments): env wins."""
        # The YAML document arrives as init kwargs; the environment wins over it.
        return env_settings, init_settings
