"""What the embedded servers (Redis, PostgreSQL) share: a server process in a temporary
folder of its own, stopped and the folder removed by `close` or on leaving a `with` block."""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class EmbeddedServer(ABC):
    """A subclass sets `_dir` and implements `start` (returning itself) and `stop`."""

    _dir: tempfile.TemporaryDirectory[str]

    @abstractmethod
    def start(self) -> Self:
        """Run the server (the subclass's); itself, for `with` and chaining."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server process (the subclass's); its folder stays until `close`."""

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
