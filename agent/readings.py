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

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agent.manifest import LEVELS

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
    """The stored readings (of `asset`, with since <= ts < until), by asset, then time."""
    clauses, params = [], []
    for clause, value in (("asset = ?", asset), ("last_ts >= ?", since), ("first_ts < ?", until)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM readings{where} ORDER BY asset, first_ts", params)
    for name, n, ts_blob, values_blob, score_blob, level_blob in rows:
        ts = np.frombuffer(ts_blob, "<f8")
        values = np.frombuffer(values_blob, "<f8").reshape(n, -1).tolist()
        scores = np.frombuffer(score_blob, "<f4").astype(np.float64)
        for i, t in enumerate(ts.tolist()):
            if (since is None or t >= since) and (until is None or t < until):
                s = float(scores[i])
                yield StoredReading(
                    name, t, values[i], None if s != s else s, LEVEL_NAMES[level_blob[i]]
                )


def count_readings(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(n), 0) FROM readings").fetchone()[0]


def migrate_per_reading_rows(conn: sqlite3.Connection, old_table: str) -> int:
    """Pack the rows of a database written before readings were packed (one row each) into
    blocks of consecutive rows of one asset, then drop the old table; return how many."""
    moved, last_id = 0, 0
    while True:
        rows = conn.execute(
            f"SELECT id, asset, ts, sensor_values, score, level, received_at FROM {old_table} "
            "WHERE id > ? ORDER BY id LIMIT 10000",
            (last_id,),
        ).fetchall()
        if not rows:
            break
        blocks, start = [], 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i][1] != rows[start][1]:
                blocks.append(_block_of_rows(rows[start:i]))
                start = i
        conn.executemany(INSERT, [b.row() for b in blocks])
        moved += len(rows)
        last_id = rows[-1][0]
    conn.execute(f"DROP TABLE {old_table}")
    return moved


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
