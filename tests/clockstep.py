"""A wall clock an agent process runs on, stepped from the test as NTP steps a gateway's.

A `sitecustomize` module on the agent's PYTHONPATH adds the seconds written in a file to
`time.time`; the monotonic clock is not touched. Test-only: nothing in the agent knows of it.
"""

from __future__ import annotations

import os
from pathlib import Path

_STEPPED_TIME = '''"""Test shim: this process's wall clock is stepped by the seconds in a
file, as NTP steps a gateway's clock; the monotonic clock is not."""
import os
import time

_wall = time.time


def _stepped() -> float:
    with open(os.environ["EDGE_TEST_CLOCK_STEP"]) as f:
        return _wall() + float(f.read())


time.time = _stepped
'''


class SteppableClock:
    """The wall clock of an agent process, stepped from the test: a `sitecustomize` module on
    the agent's PYTHONPATH adds the seconds written in a file to `time.time`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "sitecustomize.py").write_text(_STEPPED_TIME)
        self.file = folder / "step"
        self.step(0)
        path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
        self.env = {"PYTHONPATH": path, "EDGE_TEST_CLOCK_STEP": str(self.file)}

    def step(self, seconds: float) -> None:
        self.file.with_suffix(".new").write_text(str(seconds))
        self.file.with_suffix(".new").replace(self.file)  # never read half written
