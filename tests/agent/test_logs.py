"""Rate-limited warnings: one line per key per interval, and a count of what was held back."""

from __future__ import annotations

import logging

from agent.logs import Throttle


def test_a_flood_of_warnings_becomes_one_line_per_interval(caplog):
    now = [100.0]
    throttle = Throttle(logging.getLogger("test.throttle"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(50):
            throttle.warning("bad_ts", "dead letter reason=%s", "bad_ts")
        throttle.warning("empty", "dead letter reason=%s", "empty")
        now[0] += 10
        throttle.warning("bad_ts", "dead letter reason=%s", "bad_ts")
        throttle.warning("bad_ts", "dead letter reason=%s", "bad_ts")
    assert [r.getMessage() for r in caplog.records] == [
        "dead letter reason=bad_ts",
        "dead letter reason=empty",
        "dead letter reason=bad_ts suppressed=49 since_s=10",
    ]
