"""Test aid: a process started with this folder on PYTHONPATH runs with its wall clock
(`time.time`) shifted by FAKE_CLOCK_OFFSET_S seconds, as a gateway without a real-time clock
runs before NTP has set it. The monotonic clock is left alone, as the kernel leaves it.
(libfaketime would do this for every clock, but is not installed on CI.)"""

import os
import time

_offset = float(os.environ.get("FAKE_CLOCK_OFFSET_S", "0"))
if _offset:
    _real_time = time.time
    time.time = lambda: _real_time() + _offset
