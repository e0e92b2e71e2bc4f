"""Logging setup: text for the journal or one JSON object per line. Secrets never reach a handler unmasked."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import deque
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class RecentErrors(logging.Handler):
    """Keeps the last WARNING-or-worse records for the status page."""

    def __init__(self, capacity: int = 50) -> None:
        super().__init__(level=logging.WARNING)
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(
                {"at": record.created, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
            )
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


RECENT = RecentErrors()


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for the daemon or a CLI command."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root.addHandler(handler)
    root.addHandler(RECENT)
    root.setLevel(level.upper())
    # Library chatter that would otherwise drown the journal.
    for noisy in ("aiosqlite", "panoramisk", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
