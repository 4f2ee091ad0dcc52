"""systemd's notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

With `Type=notify` systemd counts the service as started only at READY=1 (sent once the agent
consumes readings), shows STATUS= in `systemctl status`, and with `WatchdogSec=` kills and
restarts the agent when WATCHDOG=1 stops coming. The pings come from the pipeline itself and
only while every part of it is turning, so a stuck pipeline is restarted, not kept alive by a
timer thread. Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@'.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if path else None
        usec = env.get("WATCHDOG_USEC", "")
        for_us = env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and for_us else 0.0
        self._failed = False

    @property
    def active(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:  # once: systemd may be restarting; the next one may work
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
            self._failed = True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")


class Watchdog:
    """WATCHDOG=1 at half the watchdog interval, while every part reports progress.

    `parts` maps a name to the monotonic time that part last turned; the main loop calls
    `beat()` on each of its turns. A part that has not turned for `stall_s` (the watchdog
    interval) holds the pings back, and is named in the log once.
    """

    def __init__(
        self,
        notifier: Notifier,
        parts: Mapping[str, Callable[[], float]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.parts = parts
        self.clock = clock
        self.interval_s = notifier.watchdog_s / 2
        self.stall_s = notifier.watchdog_s
        self._next = 0.0
        self._stalled: str | None = None

    def beat(self) -> bool:
        """Ping if it is time and nothing is stuck; returns whether a ping went."""
        if self.interval_s <= 0:
            return False
        now = self.clock()
        if now < self._next:
            return False
        stuck = [name for name, last in self.parts.items() if now - last() > self.stall_s]
        if stuck:
            if self._stalled is None:
                log.error("watchdog: %s not turning; holding pings back", ", ".join(stuck))
            self._stalled = stuck[0]
            return False
        self._stalled = None
        self._next = now + self.interval_s
        self.notifier.send("WATCHDOG=1")
        return True
