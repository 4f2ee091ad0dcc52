"""The agent's signals, caught before anything heavy is imported.

Loading numpy, ONNX Runtime and the model takes seconds on a Pi; a SIGTERM or SIGHUP in that
time must not kill the process (SIGHUP's default action is to end it). The entry point,
`agent/__main__.py`, installs these handlers first and imports the rest after; `run` reads the
events. This module imports nothing of the agent, so that nothing heavy comes before them.
"""

from __future__ import annotations

import signal
import threading

stop = threading.Event()  # SIGTERM, SIGINT: shut down in order
reload = threading.Event()  # SIGHUP: read the config again


def install() -> None:
    """SIGTERM and SIGINT set `stop`, SIGHUP sets `reload`; from the main thread (Python's rule),
    and again by `run` for a CLI entered some other way (installing twice is harmless)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
