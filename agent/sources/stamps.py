"""A reading's time, by its source's `timestamps` policy: from the payload (unix seconds or
milliseconds, ISO 8601 with an offset, or without one in the configured zone) or from when
the agent received the message.

Received times are unique and rising: `Source` gives every message a later received time than
the one before (see agent.source), and the pipeline takes a reading stamped on receipt after
its asset's last reading even when the gateway's clock stepped back. A received time is the
one the batch committed: a message redelivered after a crash either committed (its copy is
recognised and skipped) or did not (nothing of it was kept, and its new time is its first).
"""

from __future__ import annotations

import math
import zoneinfo
from datetime import UTC, datetime, tzinfo

from agent.config import TimestampConfig
from agent.sources import Seconds

# The last second a datetime (and so an alert's ISO `ts`) can show, 9999-12-31T23:59:59Z.
MAX_TS = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
MS_ABOVE = 1e11  # `auto`: a number above this is milliseconds (1e11 s is the year 5138)


class Stamper:
    def __init__(self, config: TimestampConfig) -> None:
        self.config = config
        self.zone: tzinfo | None = zoneinfo.ZoneInfo(config.zone) if config.zone else None
        self.by_receipt = config.policy == "received"
        self.may_receive = config.policy != "payload"

    def stamp(self, raw: object, received_at: float, after: float = -math.inf) -> float | str:
        """Unix seconds for a reading whose payload time is `raw` (None: it has none); a
        string is why it has no time (`bad_ts`). `after`: its asset's latest time so far,
        which tells the two passes of a naive time in the hour a fall-back repeats."""
        if self.by_receipt or (raw is None and self.may_receive):
            return received_at
        if type(raw) is Seconds:
            return _in_range(float(raw), raw)
        return parse_ts(raw, self.config.unit, self.zone, after)


def parse_ts(
    value: object, unit: str = "s", zone: tzinfo | None = None, after: float = -math.inf
) -> float | str:
    """Unix seconds from a number or an ISO 8601 string, from 1970 to `MAX_TS`; a string result
    is the error. `after`: as `Stamper.stamp`."""
    if type(value) is float and unit == "s" and 0 <= value <= MAX_TS:
        return value
    if value is None:
        return "missing 'ts'"
    if isinstance(value, bool):
        return f"'ts' must be unix seconds or ISO 8601, got {value!r}"
    if isinstance(value, int | float):
        number = _finite(value)
        if number is not None and (unit == "ms" or (unit == "auto" and number > MS_ABOVE)):
            number /= 1000.0
        return _in_range(number, value)
    if isinstance(value, str):
        return _parse_text(value, zone, after)
    return f"'ts' must be unix seconds or ISO 8601, got {type(value).__name__}"


def _parse_text(value: str, zone: tzinfo | None, after: float) -> float | str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"'ts' {short(value)} is not ISO 8601"
    if parsed.tzinfo is None:
        if zone is None:
            return (
                f"'ts' {short(value)} has no time zone (add Z or an offset, or set the "
                "source's timestamps.zone)"
            )
        parsed = parsed.replace(tzinfo=zone)
    try:
        return _in_range(_local(parsed, after), value)
    except (OverflowError, ValueError):
        return _in_range(None, value)


def _local(parsed: datetime, after: float) -> float:
    """Unix seconds of a time. A naive local time in the hour a fall-back repeats names two
    instants: the first, unless it is not after `after` (the asset's clock already went
    past it: the sensor's clock is in the second pass) and the second is."""
    stamp = parsed.timestamp()
    if stamp <= after:
        second = parsed.replace(fold=1).timestamp()  # the same instant if not ambiguous
        if second > after:
            return second
    return stamp


def _finite(value: int | float) -> float | None:
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _in_range(stamp: float | None, value: object) -> float | str:
    if stamp is not None and 0 <= stamp <= MAX_TS:
        return stamp
    return f"'ts' {short(value)} out of range (unix seconds, 1970 to 9999)"


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
