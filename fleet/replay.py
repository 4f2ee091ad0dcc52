"""Publish a CSV as sensor readings: the tool the demo and the tests feed agents with."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from agent.table import Table, TableError, read_table
from fleet.mqtt import FleetError, connect


def readings_from_csv(
    path: str | Path, sensors: list[str] | None = None
) -> list[dict[str, object]]:
    """One reading per row: `ts` from the time column (unix seconds, or ISO 8601 with naive
    times taken as UTC) or the row number, then the sensors."""
    table = read_table(path)
    names = sensors or table.sensor_columns()
    values = table.matrix(names)
    if table.time_column is None:
        stamps: list[object] = [float(i) for i in range(table.rows)]
    else:
        stamps = [_ts(cell, row, table) for row, cell in enumerate(table.timestamps(), start=2)]
    return [
        {"ts": stamps[i], **dict(zip(names, map(float, values[i]), strict=True))}
        for i in range(table.rows)
    ]


def replay(
    readings: list[dict[str, object]],
    host: str,
    port: int,
    topic: str,
    rate: float = 0.0,
    batch: int = 1,
    timeout: float = 60.0,
) -> int:
    """Publish at QoS 1, `batch` readings per message, `rate` readings/s (0: as fast as acked)."""
    client = connect(host, port)
    try:
        started = time.monotonic()
        infos = []
        for n, start in enumerate(range(0, len(readings), batch)):
            chunk = readings[start : start + batch]
            payload = json.dumps(chunk[0] if batch == 1 else chunk)
            infos.append(client.publish(topic, payload, qos=1))
            if rate > 0:
                delay = started + (n + 1) * batch / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        for info in infos:
            info.wait_for_publish(timeout=max(0.1, started + timeout - time.monotonic()))
            if not info.is_published():
                raise FleetError(
                    f"broker {host}:{port} did not acknowledge all readings in {timeout}s"
                )
        return len(readings)
    finally:
        client.disconnect()
        client.loop_stop()


def _ts(cell: str, row: int, table: Table) -> float | str:
    """A time cell as the agent accepts it: unix seconds, or ISO 8601 with a time zone."""
    try:
        return float(cell)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(cell)
    except ValueError:
        raise TableError(
            f"{table.path}: column {table.time_column!r} row {row}: {cell!r} is neither "
            "unix seconds nor ISO 8601"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()
