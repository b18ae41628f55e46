"""The sidecar as a benchmark target: its config, its key, its metrics.

The sidecar runs as `python -m sidecar serve --config FILE`, exactly as an operator runs it:
TLS, a route needing `orders:write` for POST, audit on (the default), data guard on (the
default), one key issued at run time straight into Redis.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from sidecar.config import Argon2
from sidecar.config import Redis as RedisSettings
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.store import KeyStore
from sidecar.storage.client import create_redis

PREFIX = "sk"
ENVIRONMENT = "bench"
KEY_SCOPES = ("orders:read", "orders:write")
CACHE_TTL_S = 30.0  # the default keys.cache_ttl_s, written out so the report can use it
ROUTES = [
    {"path": "/v1/orders/**", "methods": ["GET", "HEAD"], "scopes": ["orders:read"]},
    {
        "path": "/v1/orders/**",
        "methods": ["POST", "PUT", "PATCH", "DELETE"],
        "scopes": ["orders:write"],
    },
]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+([-+0-9.eEinfNa]+)$")


@dataclass(frozen=True, slots=True)
class SidecarPorts:
    proxy: int
    health: int


def write_config(
    path: Path,
    *,
    ports: SidecarPorts,
    upstream_url: str,
    redis_url: str,
    cert_file: Path,
    key_file: Path,
    spool_dir: Path,
    log_level: str,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """A complete serving config; everything not named here is the product's default.
    `sections` adds to (or adds) whole sections: the archive target's `archive` and streams."""
    document = {
        "listen": {"address": "127.0.0.1", "port": ports.proxy},
        "health": {"address": "127.0.0.1", "port": ports.health},
        "tls": {"cert_file": str(cert_file), "key_file": str(key_file)},
        "upstream": {"url": upstream_url},
        "redis": {"url": redis_url},
        "keys": {"prefix": PREFIX, "environment": ENVIRONMENT, "cache_ttl_s": CACHE_TTL_S},
        "routes": ROUTES,
        "audit": {"spool_dir": str(spool_dir)},
        "shutdown": {"drain_s": 0, "grace_s": 2},
        "log": {"level": log_level, "format": "json"},
    }
    for name, values in (sections or {}).items():
        existing = document.get(name)
        document[name] = {**(existing if isinstance(existing, dict) else {}), **values}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def serve_argv(config: Path, checkout: Path | None = None) -> list[str]:
    """`sidecar serve`, of this checkout or of `checkout` (with its own `.venv`)."""
    python = sys.executable if checkout is None else str(baseline_python(checkout))
    return [python, "-m", "sidecar", "serve", "--config", str(config)]


def revision_of(checkout: Path) -> str:
    """The short commit id of a checkout (its name as a `--step` target)."""
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or checkout.name


def baseline_python(checkout: Path) -> Path:
    """The interpreter of another checkout (`make install` made its `.venv`)."""
    return checkout / ".venv" / "bin" / "python"


async def _issue_key(redis_url: str, name: str) -> str:
    client = create_redis(RedisSettings(url=redis_url, timeout_s=5))
    try:
        new = await KeyStore(client).create(
            name=name,
            scopes=KEY_SCOPES,
            prefix=PREFIX,
            environment=ENVIRONMENT,
            hasher=SecretHasher(Argon2()),  # the sidecar's defaults: no rehash on first use
            service="bench",
        )
    finally:
        await client.aclose()
    return new.key


def issue_key(redis_url: str, name: str = "bench") -> str:
    """A fresh key with both order scopes. The caller keeps it in memory and in 0600 files
    inside the run's temporary folder, and never prints it."""
    return asyncio.run(_issue_key(redis_url, name))


def scrape_metrics(health_port: int) -> dict[str, float]:
    """The health port's /metrics as {sample name with labels: value}."""
    url = f"http://127.0.0.1:{health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback, fixed URL
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples[match.group(1)] = float(match.group(2))
    return samples


def serve_supports_workers() -> bool:
    """Whether this sidecar's `serve` has a --workers option (SPEC §10) yet."""
    completed = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--workers" in completed.stdout
