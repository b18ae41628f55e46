"""PostgreSQL for the test session: one real server, a fresh database for each test.

The server is `sidecar.storage.embedded_postgres` (the one on PATH, else the pgserver wheel's),
the same the demo starts; a test gets a database of its own so nothing it writes, migrates or
drops reaches another test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sidecar.storage.embedded_postgres import EmbeddedPostgres


@contextmanager
def fresh_database(server: EmbeddedPostgres) -> Iterator[str]:
    """A new empty database on `server` for the block; its URL. Dropped afterwards, with any
    session still connected to it, even if the block stopped the server."""
    if not server.running:  # an outage test before this one may have left it stopped
        server.start()
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        if not server.running:
            server.start()
        server.drop_database(name)
