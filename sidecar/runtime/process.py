"""One serving process, started the same way by `sidecar serve` and by each worker.

`check_serving` makes every check a process makes before it binds a port (certificate, TLS
context, the C parser); `run_serving` then serves on the best event loop until shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from sidecar.audit.keyfiles import load_audit_keys
from sidecar.config import Settings
from sidecar.runtime.serve import check_c_parser, serve
from sidecar.runtime.tls import Certificate, check_certificate, create_server_context

log = structlog.get_logger("sidecar.server")


def run_with_best_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed: a faster event loop for the same code."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def check_serving(settings: Settings, *, allow_python_parser: bool) -> Certificate:
    """The certificate to serve, once every TLS problem and a missing C parser have had their
    chance to stop the process before a port is bound."""
    certificate = check_certificate(settings.tls)
    create_server_context(settings.tls)
    for warning in load_audit_keys(settings).warnings:  # what check-config refuses, refused
        log.warning(warning)
    if not allow_python_parser:
        check_c_parser()
    return certificate


def run_serving(
    settings: Settings,
    certificate: Certificate,
    config_file: Path,
    *,
    reuse_port: bool = False,
    metrics_dir: Path | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT has drained the listeners (blocking)."""
    run_with_best_loop(
        serve(settings, certificate, config_file, reuse_port=reuse_port, metrics_dir=metrics_dir)
    )
