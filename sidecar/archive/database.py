"""How the archive talks to PostgreSQL: one connection, its session settings, and the one
table that sorts psycopg's exceptions into what the archiver does next.

- `ArchiveUnavailable`: the database cannot be used right now (down, unreachable, too slow,
  out of disk, a schema it lacks). Nothing was written; the entries wait in Redis and the
  archiver retries after a pause, on a new connection.
- `RowsRefused`: the database refused the rows themselves (a data or integrity error). The
  batch is retried row by row to find the ones to park in the dead-letter stream.

Neither message quotes a value or the URL's password: only the exception's class name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

import psycopg
from psycopg.rows import TupleRow

from sidecar.errors import SidecarError

Connection: TypeAlias = psycopg.AsyncConnection[TupleRow]
APPLICATION_NAME = "sidecar-archiver"


class ArchiveUnavailable(SidecarError):
    """PostgreSQL cannot take the archive's statements right now; `reason` says why in a few
    words (the class of the failure, never a value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"PostgreSQL unreachable ({reason})")
        self.reason = reason


class RowsRefused(Exception):
    """PostgreSQL refused a row's values (`reason`: the SQLSTATE class name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def connect(url: str, timeout_s: float) -> Connection:
    """A new autocommit connection (statements that belong together say so with a
    transaction) whose session runs in UTC and cancels any statement after `timeout_s`.

    UTC, so that `date_trunc('minute', ts)` and the partitions' day bounds mean the same
    minute and day whatever the server's or the role's time zone."""
    options = f"-c TimeZone=UTC -c statement_timeout={max(1, round(timeout_s * 1000))}"
    with database_errors():
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, round(timeout_s)),
            options=options,
            application_name=APPLICATION_NAME,
        )


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn psycopg's exceptions inside the block into `RowsRefused` (the rows' fault) or
    `ArchiveUnavailable` (anything else: the database's or the connection's)."""
    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise RowsRefused(type(exc).__name__) from exc
    except psycopg.Error as exc:
        raise ArchiveUnavailable(type(exc).__name__) from exc
    except OSError as exc:  # a socket error psycopg did not wrap
        raise ArchiveUnavailable(type(exc).__name__) from exc
