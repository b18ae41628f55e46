"""What the sidecars complained about during the run: warnings and errors from their JSON logs.

A benchmark that only counts responses misses a server that answers and then logs a
traceback; the report lists each distinct complaint with how often it came.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sidecar.keys.format import KEY_PATTERN

_LEVELS = ("warning", "error", "critical")
_MAX_TEXT = 240


def complaints(log_path: Path) -> Counter[str]:
    """`level event: last exception line` → count, for warnings and worse."""
    found: Counter[str] = Counter()
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                found[f"unparsed: {line.strip()[:_MAX_TEXT]}"] += 1
            continue
        if not isinstance(entry, dict) or entry.get("level") not in _LEVELS:
            continue
        text = f"{entry['level']} {entry.get('event', '?')}"
        exception = entry.get("exception")
        if isinstance(exception, str) and exception.strip():
            text += ": " + exception.strip().splitlines()[-1]
        # Defensive: a log line must never carry a key into the report.
        found[KEY_PATTERN.sub("[key]", text)[:_MAX_TEXT]] += 1
    return found
