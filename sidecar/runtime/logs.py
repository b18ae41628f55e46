"""structlog configuration: one processor chain for our events and for stdlib (aiohttp) logs."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

from sidecar.config.url_credentials import SEPARATOR, mask_url_credentials
from sidecar.guard.credentials import CREDENTIAL_HEADERS

_REDACTED = "[redacted]"
# Values nested deeper than this are rendered as they are: no log call of ours nests so deep,
# and the walk must end on a structure that refers to itself.
_MAX_DEPTH = 8
_PLAIN = (int, float, bool, type(None))


def drop_credentials(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Last line of defence: a field named like a credential header never reaches the output."""
    for name in list(event):
        if name.lower().replace("_", "-") in CREDENTIAL_HEADERS:
            event[name] = _REDACTED
    return event


def mask_urls(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The password of any URL in any value (the message, a nested list or dict, an exception's
    text) masked (`scheme://user:***@host`), so the upstream, Redis or archive URL never shows
    one, whoever logged it. Runs last before the renderer, after `format_exc_info`."""
    for name, value in event.items():
        masked = _masked(value, 0)
        if masked is not value:
            event[name] = masked
    return event


def _masked(value: Any, depth: int) -> Any:
    """`value` with URL credentials masked; the same object when there were none."""
    if isinstance(value, str):
        return mask_url_credentials(value)
    if isinstance(value, _PLAIN) or depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        items = {key: _masked(item, depth + 1) for key, item in value.items()}
        same = all(items[key] is item for key, item in value.items())
        return value if same else items
    if isinstance(value, list | tuple | set | frozenset):
        masked = [_masked(item, depth + 1) for item in value]
        same = all(new is old for new, old in zip(masked, value, strict=True))
        return value if same else masked
    # Anything else is rendered by its repr (an exception, a settings object, a URL type):
    # that is the text to look at.
    text = repr(value)
    return mask_url_credentials(text) if SEPARATOR in text else value


class _StderrLines:
    """structlog's last stop for our own events: the rendered line, written to stderr.

    Our events skip the standard library's `LogRecord`, handler and formatter: that path cost
    ~34 µs per access-log line, most of it the per-request `info` line the product default
    writes. Foreign (stdlib) records still go through `ProcessorFormatter` with the same
    processors, so both kinds of line look alike."""

    _lock = threading.Lock()  # one line at a time, whichever thread logs

    def __init__(self, name: str = "") -> None:
        self.name = name  # read by `structlog.stdlib.add_logger_name`

    def write(self, line: str) -> None:
        """One rendered event, as one line on the current `sys.stderr`."""
        stream = sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = msg = write


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog and stdlib logging through one chain, rendered as JSON or for a terminal."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_credentials,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, mask_urls, renderer],
        logger_factory=_StderrLines,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Exceptions of foreign (stdlib) records too become text that `mask_urls`
                # reads; ours were formatted in the chain above already.
                structlog.processors.format_exc_info,
                mask_urls,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log is replaced by our one line per request.
    logging.getLogger("aiohttp.access").disabled = True
