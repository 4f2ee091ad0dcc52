"""`edge-agent` and `python -m agent`: the signal handlers first, then everything else.

Loading numpy, ONNX Runtime and the model takes seconds on a Pi, and a SIGTERM or SIGHUP in
that time must not end the process (agent/signals.py says why). So this module imports only
`agent.signals` before the handlers are in place, and the CLI, with all it loads, after.
"""

from __future__ import annotations

import sys

from agent import signals


def main() -> int:
    """The `edge-agent` console script: handlers first, then the CLI."""
    signals.install()
    from agent.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
