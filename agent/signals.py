"""The agent's signals, caught before anything heavy is imported.

Loading numpy, ONNX Runtime and the model takes seconds on a Pi; a SIGTERM or SIGHUP in that
time must not kill the process (SIGHUP's default action is to end it). `edge-agent` installs
these handlers first and imports the rest after; `run` reads the events.
"""

from __future__ import annotations

import signal
import threading

stop = threading.Event()  # SIGTERM, SIGINT: shut down in order
reload = threading.Event()  # SIGHUP: read the config again


def install() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())


def main() -> int:
    """The `edge-agent` console script: handlers first, then the CLI."""
    install()
    from agent.cli import main as cli_main

    return cli_main()
