"""A sidecar with no archive and no admin listener does not load their libraries: psycopg
(with libpq) and Jinja2 are ~10 MiB of every worker's memory."""

from __future__ import annotations

import subprocess
import sys


def test_serving_modules_load_neither_psycopg_nor_jinja2() -> None:
    probe = (
        "import sys, sidecar.runtime.serve, sidecar.cli.main; "
        "print(sorted(m for m in ('psycopg', 'jinja2', 'aiohttp_jinja2') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"
