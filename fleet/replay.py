"""Publish a CSV as sensor readings: the tool the demo and the tests feed agents with."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from agent.config import BrokerConfig
from agent.model.table import Table, TableError, read_table, table_from_text
from fleet.mqtt import FleetError, connect

# `edge-fleet replay -` holds the whole table in memory, as it does a file's (the sensor columns
# are the columns numeric in every row, known only at the end), at about 20 bytes of memory per
# byte of CSV (measured to a closed broker: peak RSS 338 MB for a 16.7 MB CSV from stdin or from
# the file alike, 915 MB for 50 MB). A pipe has no end to trust, so it is cut where a replay
# stays near a third of the smallest (0.5 GB) gateway's memory: 16 MiB is about 270,000 rows of
# `edge-trainer simulate`, six months of minutes.
STDIN_LIMIT_BYTES = 16 * 1024 * 1024


def readings_from_csv(
    path: str | Path, sensors: list[str] | None = None
) -> list[dict[str, object]]:
    """One reading per row of the file at `path` (see `readings_from_table`)."""
    return readings_from_table(read_table(path), sensors)


def read_stdin_table(stream: BinaryIO, limit: int = STDIN_LIMIT_BYTES) -> Table:
    """The CSV piped in on `stream`, refused beyond `limit` bytes before it fills memory."""
    return table_from_text(_bounded_text(stream, limit), "<stdin>")


def _bounded_text(stream: BinaryIO, limit: int) -> str:
    """At most `limit` bytes of UTF-8 (the bytes are dropped once decoded)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise TableError(
            f"<stdin>: more than {limit} bytes; write the CSV to a file and replay the file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TableError("<stdin>: not UTF-8 text") from None
    if not text.strip():
        raise TableError("<stdin>: nothing was piped in (expected a CSV)")
    return text


def readings_from_table(table: Table, sensors: list[str] | None = None) -> list[dict[str, object]]:
    """One reading per row: `ts` from the time column (unix seconds, or ISO 8601 with naive
    times taken as UTC) or the row number, then the sensors."""
    names = sensors or table.sensor_columns()
    if not names:
        raise TableError(f"{table.path}: no numeric sensor column; columns are {table.header}")
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
    security: BrokerConfig | None = None,
) -> int:
    """Publish at QoS 1, `batch` readings per message, `rate` readings/s (0: as fast as acked)."""
    chunks = [readings[i : i + batch] for i in range(0, len(readings), batch)]
    payloads = [json.dumps(c[0] if batch == 1 else c) for c in chunks]
    publish_payloads(payloads, host, port, topic, rate / batch, timeout, security)
    return len(readings)


def publish_payloads(
    payloads: Iterable[str | bytes],
    host: str,
    port: int,
    topic: str,
    rate: float = 0.0,
    timeout: float = 60.0,
    security: BrokerConfig | None = None,
) -> int:
    """Publish at QoS 1 on one topic (see `publish_messages`)."""
    return publish_messages(((topic, p) for p in payloads), host, port, rate, timeout, security)


def publish_messages(
    messages: Iterable[tuple[str, str | bytes]],
    host: str,
    port: int,
    rate: float = 0.0,
    timeout: float = 60.0,
    security: BrokerConfig | None = None,
) -> int:
    """Publish (topic, payload) pairs at QoS 1, `rate` messages/s (0: no pacing), and wait
    for every PUBACK.

    Survives the broker restarting, in order: paho keeps unacknowledged messages and resends
    them when it reconnects, but a message published while it reconnects can overtake them (and
    the agent drops a reading older than one it has seen), so after a disconnect publishing
    waits until the backlog is acknowledged. Acks are counted, not matched by message id,
    because ids wrap at 65535.
    """
    client = connect(host, port, security=security)
    acked = [0]
    interrupted = threading.Event()
    done = threading.Condition()

    def on_publish(_c: object, _u: object, _mid: int, _rc: object, _p: object) -> None:
        with done:
            acked[0] += 1
            done.notify_all()

    client.on_publish = on_publish
    client.on_disconnect = lambda *_: interrupted.set()
    try:
        started = time.monotonic()
        sent = 0
        for topic, payload in messages:
            if interrupted.is_set():
                _wait_acked(done, acked, sent, started + timeout, f"{host}:{port}")
                interrupted.clear()
            client.publish(topic, payload, qos=1)
            sent += 1
            if rate > 0:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        _wait_acked(done, acked, sent, started + timeout, f"{host}:{port}")
        return sent
    finally:
        client.disconnect()
        client.loop_stop()


def _wait_acked(
    done: threading.Condition, acked: list[int], sent: int, deadline: float, broker: str
) -> None:
    with done:
        if not done.wait_for(lambda: acked[0] >= sent, max(0.1, deadline - time.monotonic())):
            raise FleetError(f"broker {broker} acknowledged {acked[0]} of {sent} messages in time")


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
