"""The current time as the agent writes it into its files and messages: ISO 8601, UTC, `Z`.

One way for every stamp the agent makes (fleet state, the status's `last_seen`, storage
incidents, push envelopes), so a consumer parses one form (#14 item 7: it was written three
ways, one of them with `+00:00`). Times of readings and alerts are theirs, not now: see
`agent.alert`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal


def now_iso(timespec: Literal["seconds", "milliseconds"] = "seconds") -> str:
    """Now, e.g. `2026-11-29T15:32:07Z` (or `...07.250Z` with milliseconds)."""
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
