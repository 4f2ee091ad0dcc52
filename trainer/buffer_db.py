"""Training readings straight from an agent's buffer database, without the alert episodes.

A model that drifted is refitted on what the gateway saw lately (issue 15): one asset's readings
in a time range, less every alert episode and a margin around it, read with sqlite-utils by
table and column names only (the trainer does not import the agent's store; a test writes a
database through the store and trains from it, so a schema change fails there first).

What is read, as the agent writes it (`agent.readings`, `agent.alert`):
- `meta` row `sensors`: the model's sensor names, JSON, in the order the values are packed;
- `readings`: one row per asset per micro-batch; `ts` and `sensor_values` are little-endian
  float64 arrays of `n` and `n × sensors` entries; `first_ts` / `last_ts` select by time;
- `outbox.payload`: each alert as JSON, with `asset`, `state` (firing / resolved),
  `episode_start` and `ts` (ISO 8601 UTC).

An episode runs from its `episode_start` to the `ts` of its `resolved` alert (to the end of the
range while none was sent). Left out with it: `margin` readings on each side (by default the
model's window), so no training window holds a reading of the episode or of its onset (a window
scores high only once the anomaly fills enough of it). The kept readings form stretches; windows
are cut within a stretch, never across a removed episode. Alerts evicted from a full outbox
cannot be seen, and their episodes stay in (the summary counts the episodes found).

The database is opened read-only (`mode=ro`): in WAL mode that sees the last commit of an agent
that is running, and never blocks it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlite_utils

# The agent's database file in its data dir (agent.store.database.DB_NAME).
DB_FILE = "agent.db"


class BufferReadError(ValueError):
    """The database cannot give training readings as asked; the message says why."""


@dataclass(frozen=True)
class BufferReadings:
    """One asset's kept readings in time order, cut into stretches around the episodes."""

    source: str  # "<database>:<asset>", for the manifest's training source
    sensors: list[str]
    ts: np.ndarray  # float64 [rows], unix seconds
    values: np.ndarray  # float64 [rows, sensors]
    starts: np.ndarray  # int64: the row where each stretch begins (the first is 0)
    in_range: int  # readings of the asset in the range, before leaving episodes out
    episodes: int  # episodes that overlapped the range


def parse_time(text: str) -> float:
    """Unix seconds, or ISO 8601 (a time without a zone is UTC); for --since / --until."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (give ISO 8601 or unix seconds)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_buffer(
    path: str | Path,
    asset: str,
    since: float | None,
    until: float | None,
    margin: int,
) -> BufferReadings:
    """The asset's readings with since <= ts < until, episodes and `margin` readings around
    each left out. `path` is the database file or the agent's data dir."""
    path = Path(path)
    if path.is_dir():
        path = path / DB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no agent database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        _check_tables(db, path)
        sensors = _sensors(db, path)
        ts, values = _readings(db, asset, since, until, len(sensors))
        if not len(ts):
            raise BufferReadError(
                f"{path}: no readings of asset {asset!r} between {_when(since)} and "
                f"{_when(until)} (assets stored: {_assets(db)})"
            )
        spans = _episodes(db, asset)
    except sqlite3.DatabaseError as exc:  # a damaged page, an outbox payload that is not JSON
        raise BufferReadError(f"{path}: cannot read the database: {exc}") from None
    finally:
        conn.close()
    lo = -np.inf if since is None else since
    hi = np.inf if until is None else until
    keep = _outside(ts, spans, margin)  # every episode: a margin may reach into the range
    starts = np.flatnonzero(keep & ~np.r_[False, keep[:-1]])
    kept_starts = np.searchsorted(np.flatnonzero(keep), starts)
    return BufferReadings(
        source=f"{path}:{asset}",
        sensors=sensors,
        ts=ts[keep],
        values=values[keep],
        starts=kept_starts.astype(np.int64),
        in_range=len(ts),
        episodes=sum(1 for start, end in spans if start < hi and end >= lo),
    )


def _when(moment: float | None) -> str:
    if moment is None:
        return "any time"
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _assets(db: sqlite_utils.Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT asset FROM readings ORDER BY asset")]


def _check_tables(db: sqlite_utils.Database, path: Path) -> None:
    wanted = {
        "meta": {"key", "value"},
        "readings": {"asset", "n", "first_ts", "last_ts", "ts", "sensor_values"},
        "outbox": {"payload"},
    }
    try:
        tables = set(db.table_names())
    except sqlite3.DatabaseError as exc:
        raise BufferReadError(f"{path}: not an SQLite database ({exc})") from None
    for table, columns in wanted.items():
        if table not in tables:
            raise BufferReadError(f"{path}: not an agent database (no table {table!r})")
        missing = columns - set(db[table].columns_dict)
        if missing:
            raise BufferReadError(
                f"{path}: table {table!r} lacks column(s) {sorted(missing)}: a database of "
                "another release; export it with `edge-agent buffer export` instead"
            )


def _sensors(db: sqlite_utils.Database, path: Path) -> list[str]:
    rows = list(db["meta"].rows_where("key = ?", ["sensors"], select="value"))
    if not rows:
        raise BufferReadError(f"{path}: no sensor names stored (written when the agent starts)")
    try:
        names = json.loads(rows[0]["value"])
    except (ValueError, TypeError, RecursionError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BufferReadError(f"{path}: the stored sensor names are not a list of names")
    return names


def _readings(
    db: sqlite_utils.Database, asset: str, since: float | None, until: float | None, width: int
) -> tuple[np.ndarray, np.ndarray]:
    where, args = ["asset = ?"], [asset]
    if since is not None:
        where.append("last_ts >= ?")
        args.append(since)
    if until is not None:
        where.append("first_ts < ?")
        args.append(until)
    stamps, blocks = [], []
    for row in db["readings"].rows_where(
        " AND ".join(where), args, order_by="first_ts, id", select="id, n, ts, sensor_values"
    ):
        arrays = (row["ts"], row["sensor_values"])
        if not all(isinstance(a, bytes) and len(a) % 8 == 0 for a in arrays):
            raise BufferReadError(
                f"readings row {row['id']}: its times and values are not float64 arrays"
            )
        ts = np.frombuffer(row["ts"], "<f8")
        values = np.frombuffer(row["sensor_values"], "<f8")
        if len(ts) != row["n"] or values.size != row["n"] * width:
            raise BufferReadError(
                f"a readings row of {row['n']} readings holds {len(ts)} times and "
                f"{values.size} values for {width} sensors: written with other sensors?"
            )
        stamps.append(ts)
        blocks.append(values.reshape(-1, width))
    if not stamps:
        return np.empty(0), np.empty((0, width))
    ts, values = np.concatenate(stamps), np.concatenate(blocks)
    order = np.argsort(ts, kind="stable")  # rows may overlap after a model change
    ts, values = ts[order], values[order]
    inside = np.ones(len(ts), dtype=bool)
    if since is not None:
        inside &= ts >= since
    if until is not None:
        inside &= ts < until
    return ts[inside], values[inside]


def _episodes(db: sqlite_utils.Database, asset: str) -> list[tuple[float, float]]:
    """(start, end) of each of the asset's episodes in the outbox; end is +inf while open."""
    ends: dict[float, float] = {}
    try:
        rows = list(
            db["outbox"].rows_where(
                "json_extract(payload, '$.asset') = ?", [asset], select="payload"
            )
        )
    except sqlite3.OperationalError as exc:  # "malformed JSON"
        raise BufferReadError(f"an alert in the outbox cannot be read: {exc}") from None
    for row in rows:
        try:
            alert = json.loads(row["payload"])  # valid JSON (json_extract read it), maybe deep
            start = parse_time(alert["episode_start"])
            ts = parse_time(alert["ts"])
            state = alert["state"]
        except KeyError as exc:
            raise BufferReadError(f"an alert in the outbox has no {exc}: {alert}") from None
        except (TypeError, ValueError, RecursionError) as exc:
            raise BufferReadError(f"an alert in the outbox cannot be read: {exc}") from None
        end = ends.setdefault(start, np.inf)
        if state == "resolved":
            ends[start] = min(end, ts)
    # ISO times are kept to the millisecond: widen by half of one.
    return [(start - 5e-4, end + 5e-4) for start, end in sorted(ends.items())]


def _outside(ts: np.ndarray, spans: list[tuple[float, float]], margin: int) -> np.ndarray:
    """Which readings lie outside every span widened by `margin` readings on each side."""
    keep = np.ones(len(ts), dtype=bool)
    for start, end in spans:
        first = int(np.searchsorted(ts, start, side="left"))
        last = int(np.searchsorted(ts, end, side="right"))
        keep[max(0, first - margin) : last + margin] = False
    return keep
