"""Stored readings: one `readings` row per asset per micro-batch, its columns packed arrays.

SQLite costs about 1.6 µs per inserted row from Python whatever the row holds, which was the
largest single cost of draining batched messages; a row holding an asset's whole share of a
batch costs about 0.2 µs per reading. Each row keeps everything the per-reading rows kept:
time, sensor values (float64, in the model's sensor order), score (float32, as the model gave
it; NaN where the asset's window was not yet full), level (one byte: 0 below `info`, then
`info`, `warning`, `critical`) and the time the agent received the message, all as
little-endian arrays of `n` entries. `first_ts` and `last_ts` let queries pick rows by time.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agent.model.manifest import LEVELS

LEVEL_NAMES: tuple[str | None, ...] = (None, *LEVELS)

INSERT = (
    "INSERT INTO readings (asset, n, first_ts, last_ts, ts, sensor_values, score, level, "
    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "asset, n, ts, sensor_values, score, level"


@dataclass(frozen=True)
class ReadingBlock:
    """One asset's readings of a batch, in time order, as they are stored."""

    asset: str
    ts: np.ndarray  # float64 [n]
    values: np.ndarray  # float64 [n, n_sensors]
    score: np.ndarray  # float32 [n], NaN where not scored
    level: np.ndarray  # uint8 [n], index into LEVEL_NAMES
    received_at: np.ndarray  # float64 [n]

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def of(
        cls,
        asset: str,
        ts: np.ndarray | list[float],
        values: np.ndarray | list[list[float]],
        score: np.ndarray | list[float] | None = None,
        level: np.ndarray | list[int] | None = None,
        received_at: float = 0.0,
    ) -> ReadingBlock:
        """A block from plain lists (unscored and below `info` unless given)."""
        ts = np.asarray(ts, dtype=np.float64)
        n = len(ts)
        return cls(
            asset,
            ts,
            np.asarray(values, dtype=np.float64).reshape(n, -1),
            np.full(n, np.nan, np.float32) if score is None else np.asarray(score, np.float32),
            np.zeros(n, np.uint8) if level is None else np.asarray(level, np.uint8),
            np.full(n, received_at),
        )

    def row(self) -> tuple[object, ...]:
        """The `readings` row, in INSERT's column order."""
        return (
            self.asset,
            len(self.ts),
            float(self.ts[0]),
            float(self.ts[-1]),
            self.ts.astype("<f8").tobytes(),
            self.values.astype("<f8").tobytes(),
            self.score.astype("<f4").tobytes(),
            self.level.astype(np.uint8).tobytes(),
            self.received_at.astype("<f8").tobytes(),
        )


class StoredReading(NamedTuple):
    """One reading as read back."""

    asset: str
    ts: float
    values: list[float]
    score: float | None
    level: str | None


def stored_readings(
    conn: sqlite3.Connection,
    asset: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Iterator[StoredReading]:
    """The stored readings (of `asset`, with since <= ts < until), by asset, then time.

    Rows come by their first time; the agent writes an asset's rows in time order, but after a
    model change (windows start afresh) older times can be stored again, so rows may overlap:
    readings wait in a heap until no later row can hold an earlier one.
    """
    clauses, params = [], []
    for clause, value in (("asset = ?", asset), ("last_ts >= ?", since), ("first_ts < ?", until)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM readings{where} ORDER BY asset, first_ts, id", params
    )
    waiting: list[tuple[float, int, StoredReading]] = []
    current, seq = None, 0
    for name, n, ts_blob, values_blob, score_blob, level_blob in rows:
        ts = np.frombuffer(ts_blob, "<f8").tolist()
        if name != current:
            while waiting:
                yield heapq.heappop(waiting)[2]
            current = name
        while waiting and waiting[0][0] <= ts[0]:
            yield heapq.heappop(waiting)[2]
        values = np.frombuffer(values_blob, "<f8").reshape(n, -1).tolist()
        scores = np.frombuffer(score_blob, "<f4").astype(np.float64).tolist()
        for i, t in enumerate(ts):
            if (since is None or t >= since) and (until is None or t < until):
                s = scores[i]
                level = LEVEL_NAMES[level_blob[i]]
                reading = StoredReading(name, t, values[i], None if s != s else s, level)
                heapq.heappush(waiting, (t, seq, reading))
                seq += 1
    while waiting:
        yield heapq.heappop(waiting)[2]


def is_packed(conn: sqlite3.Connection) -> bool:
    """Whether the readings are stored this way (an earlier release's are packed at start)."""
    return "n" in {row[1] for row in conn.execute("PRAGMA table_info(readings)")}


def count_readings(conn: sqlite3.Connection) -> int:
    """Readings stored (in a database not yet packed, a row each)."""
    packed = is_packed(conn)
    sql = "SELECT coalesce(sum(n), 0) FROM readings" if packed else "SELECT count(*) FROM readings"
    return conn.execute(sql).fetchone()[0]


OLD_TABLE = "readings_per_row"  # where an earlier release's rows wait to be packed


def pack_old_rows(conn: sqlite3.Connection, chunk: int = 10_000) -> int:
    """Pack the rows an earlier release stored one per reading (renamed OLD_TABLE) into blocks,
    `chunk` rows per transaction, deleting them as they go, so a migration that is
    interrupted (a restart, a full disk) resumes where it stopped and the file does not grow
    by the size of the copy. Drops OLD_TABLE when it is empty; returns how many it moved."""
    moved = 0
    while True:
        with conn:
            conn.execute("BEGIN")
            rows = conn.execute(
                f"SELECT id, asset, ts, sensor_values, score, level, received_at FROM {OLD_TABLE} "
                "ORDER BY id LIMIT ?",
                (chunk,),
            ).fetchall()
            if not rows:
                conn.execute(f"DROP TABLE {OLD_TABLE}")
                return moved
            conn.executemany(INSERT, [_block_of_rows(run).row() for run in _runs(rows)])
            conn.execute(f"DELETE FROM {OLD_TABLE} WHERE id <= ?", (rows[-1][0],))
        moved += len(rows)


def _runs(rows: list[tuple]) -> Iterator[list[tuple]]:
    """Consecutive rows that can share a block: one asset, times rising, as many sensors."""
    start = 0
    for i in range(1, len(rows) + 1):
        if (
            i == len(rows)
            or rows[i][1] != rows[i - 1][1]
            or not rows[i][2] > rows[i - 1][2]
            or len(rows[i][3]) != len(rows[i - 1][3])
        ):
            yield rows[start:i]
            start = i


def _block_of_rows(rows: list[tuple]) -> ReadingBlock:
    codes = {name: code for code, name in enumerate(LEVEL_NAMES)}
    return ReadingBlock(
        rows[0][1],
        np.array([r[2] for r in rows], dtype=np.float64),
        np.stack([np.frombuffer(r[3], "<f8") for r in rows]),
        np.array([np.nan if r[4] is None else r[4] for r in rows], dtype=np.float32),
        np.array([codes.get(r[5], 0) for r in rows], dtype=np.uint8),
        np.array([r[6] or 0.0 for r in rows], dtype=np.float64),
    )
