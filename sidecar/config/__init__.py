"""Configuration: the typed, frozen settings (`settings`), how they are loaded from YAML and
the environment (`load`), and the Redis URL forms they accept (`redis_urls`); `routes` and
`section` hold the route sections and the shapes the sections share.

Part of the foundation: imports nothing of sidecar's but `sidecar.errors`.
"""

from sidecar.config.load import (
    LoadedConfig,
    config_named,
    config_path,
    load_config,
    load_settings,
)
from sidecar.config.routes import Route, RouteMap
from sidecar.config.section import SCOPE_SHAPE
from sidecar.config.settings import (
    CONFIG_ENV,
    ENV_DELIMITER,
    ENV_PREFIX,
    Admin,
    Archive,
    Argon2,
    Audit,
    DataGuard,
    GuardMode,
    Health,
    Hsts,
    Keys,
    Limits,
    Listen,
    Log,
    Rate,
    RateLimits,
    Redis,
    Settings,
    Shutdown,
    Tls,
    Upstream,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_DELIMITER",
    "ENV_PREFIX",
    "SCOPE_SHAPE",
    "Admin",
    "Archive",
    "Argon2",
    "Audit",
    "DataGuard",
    "GuardMode",
    "Health",
    "Hsts",
    "Keys",
    "Limits",
    "Listen",
    "LoadedConfig",
    "Log",
    "Rate",
    "RateLimits",
    "Redis",
    "Route",
    "RouteMap",
    "Settings",
    "Shutdown",
    "Tls",
    "Upstream",
    "config_named",
    "config_path",
    "load_config",
    "load_settings",
]
