"""The one form of "now" the agent writes: ISO 8601, UTC, with `Z` (#14 item 7)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from agent.isotime import now_iso


def test_now_is_utc_with_a_z_to_the_second_or_millisecond():
    before = datetime.now(UTC).replace(microsecond=0)
    stamp, precise = now_iso(), now_iso("milliseconds")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", precise), precise
    assert before <= datetime.fromisoformat(stamp) <= datetime.fromisoformat(precise)
