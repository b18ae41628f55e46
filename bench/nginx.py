"""nginx as the yardstick: one worker, TLS with the same certificate, the same bearer key
checked by a `map`, keep-alive to the same upstream.

It does a fraction of the sidecar's work (no hashing, no audit, no data guard, no per-request
log line): the target ratio sidecar/nginx ≥ 0.30 allows for that.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.private import write_private

INSTALL_HINT = "nginx not found: install it with `apt-get install nginx` to compare against it"


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def write_config(
    prefix: Path,
    *,
    port: int,
    upstream_port: int,
    cert_file: Path,
    key_file: Path,
    api_key: str,
) -> Path:
    """nginx.conf under `prefix` (pid, logs and temp files stay there too); mode 0600."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / sub).mkdir(parents=True, exist_ok=True)
    temp = prefix / "temp"
    # keepalive_requests: nginx closes a connection after 1,000 requests by default, aiohttp
    # never does; raised both ways so all targets keep their 64 connections for the run.
    text = f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    map_hash_bucket_size 256;  # a bearer key is longer than the default bucket holds
    map $http_authorization $bench_key_ok {{
        default 0;
        "Bearer {api_key}" 1;
    }}

    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert_file};
        ssl_certificate_key {key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
        add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;

        location / {{
            if ($bench_key_ok = 0) {{
                return 401;
            }}
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""
    return write_private(prefix / "nginx.conf", text)


def argv(nginx: str, prefix: Path, config: Path) -> list[str]:
    # -e: the error log before the config is read (else nginx tries /var/log/nginx).
    return [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
