"""What the embedded servers (Redis, PostgreSQL) share: a server process in a temporary
folder of its own, stopped and the folder removed by `close` or on leaving a `with` block."""

from __future__ import annotations

import tempfile
from types import TracebackType
from typing import Self


class EmbeddedServer:
    """A subclass sets `_dir` and implements `start` (returning itself) and `stop`."""

    _dir: tempfile.TemporaryDirectory[str]

    def start(self) -> Self:
        """Run the server (the subclass's); itself, for `with` and chaining."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server process (the subclass's); its folder stays until `close`."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()
