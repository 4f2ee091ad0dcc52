"""Logging to stderr as key=value lines or JSON objects, which journald and grep both read."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} level={record.levelname.lower()} "
            f"logger={record.name} msg={record.getMessage()!r}"
        )
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers that parse JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "kv") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@dataclass
class _Key:
    last: float
    suppressed: int = 0


class Throttle:
    """At most one warning per key per interval; the next one says how many were held back
    (`... suppressed=42 since_s=10`).

    A sensor gone bad can send thousands of bad readings a minute: each is counted and stored,
    but journald should get a line, not a flood.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._keys: dict[str, _Key] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self.clock()
        state = self._keys.get(key)
        if state is not None and now - state.last < self.interval_s:
            state.suppressed += 1
            return
        if state is not None and state.suppressed:
            # key=value like the rest of the line: the lines held back since the last one shown.
            msg += " suppressed=%d since_s=%.0f"
            args = (*args, state.suppressed, now - state.last)
        self._keys[key] = _Key(now)
        self.logger.warning(msg, *args)
