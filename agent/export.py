"""The buffer as a data source: readings out to CSV for retraining, and space given back.

`export_readings` is the loop from gateway back to trainer: its CSV (a `timestamp` column, an
`asset` column, then the model's sensors by name) is what `edge-trainer train` reads. Both
functions work beside a running agent: export reads through a read-only connection (WAL lets
it see the last commit without blocking the writer), vacuum waits for the agent's lock.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from agent.atomic import replacing
from agent.readings import StoredReading, is_packed, stored_readings
from agent.store.database import DB_NAME

_BUSY_TIMEOUT_MS = 30_000


class ExportError(ValueError):
    """The database cannot be exported as asked; the message says why."""


def _database(data_dir: str | Path) -> Path:
    path = Path(data_dir) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no agent database at {path}")
    return path


def export_readings(
    data_dir: str | Path,
    out: str | Path,
    asset: str | None = None,
    since: float | None = None,
    until: float | None = None,
    with_scores: bool = False,
) -> int:
    """Write the stored readings (ordered by asset, then time) to `out`; return how many."""
    path = _database(data_dir)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sensors = _sensors(conn, path)
        if not is_packed(conn):
            raise ExportError(
                f"{path}: readings stored one per row by an older agent; start the agent once "
                "and it packs them"
            )
        return _write_csv(
            Path(out), sensors, stored_readings(conn, asset, since, until), with_scores
        )
    finally:
        conn.close()


def _sensors(conn: sqlite3.Connection, path: Path) -> list[str]:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'sensors'").fetchone()
    except sqlite3.OperationalError as exc:
        raise ExportError(f"{path}: not an agent database with readings ({exc})") from None
    if row is None:
        raise ExportError(f"{path}: no sensor names stored (written when the agent starts)")
    return json.loads(row[0])


def _write_csv(
    out: Path, sensors: list[str], readings: Iterable[StoredReading], with_scores: bool
) -> int:
    written = 0
    with replacing(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "asset", *sensors, *(["score", "level"] * with_scores)])
        for r in readings:
            stamp = datetime.fromtimestamp(r.ts, UTC).isoformat()
            extra = [("" if r.score is None else r.score), r.level or ""] if with_scores else []
            writer.writerow([stamp, r.asset, *r.values, *extra])
            written += 1
    return written


def vacuum(data_dir: str | Path) -> dict[str, int]:
    """Checkpoint the WAL and rebuild the file so that evicted space goes back to the disk."""
    path = _database(data_dir)
    before = _bytes(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {"bytes_before": before, "bytes_after": _bytes(path)}


def _bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
