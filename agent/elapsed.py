"""Elapsed time that survives restarts: what alert time-to-live is measured on (#13 item 8).

The wall clock of a gateway is not a measure of age: a Raspberry Pi has no real-time clock and
boots at the time it last saved, then NTP steps it forward by days, or a bad NTP source steps it
back. An alert raised before such a step and judged by wall-clock difference was expired at once
(or kept forever). Elapsed time is the monotonic clock, which no step moves, added to what
earlier runs accumulated: the store saves it in its `meta` table with each commit. The time the
agent is not running (stopped, powered off) is not counted, by design: only the monotonic
clock of a running agent is trustworthy; the alert's own `ts` still says when it happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Elapsed:
    """Seconds of agent running time since the database was created."""

    def __init__(self, saved: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        """`saved`: the value the last run saved; `monotonic`: the clock (injectable in tests)."""
        self._monotonic = monotonic
        self._base = saved
        self._start = monotonic()

    def now(self) -> float:
        return self._base + (self._monotonic() - self._start)

    @staticmethod
    def parse(saved: str | None) -> float:
        """The saved value, 0 for a database that never saved one (it predates this)."""
        try:
            value = float(saved) if saved is not None else 0.0
        except ValueError:
            value = -1.0
        if not 0 <= value < float("inf"):
            log.warning("saved elapsed time %r unusable; alert ages count from now", saved)
            return 0.0
        return value
