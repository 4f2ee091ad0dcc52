"""Rate-limited warnings: one line per key per interval, and a count of what was held back."""

from __future__ import annotations

import json
import logging
import sys

from agent.logs import JsonFormatter, Throttle


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


def test_json_log_lines_are_one_object_each_with_the_traceback_inside():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("agent.x", logging.ERROR, __file__, 1, "bad %s", ("it",), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "agent.x" and entry["msg"] == "bad it"
    assert "ValueError: boom" in entry["exc"]
