"""Store stage: readings, the alert outbox and dead letters in one SQLite file.

A micro-batch's readings, alerts and dead letters commit in one transaction, so an alert is in
the outbox exactly when the readings that caused it are stored. WAL with synchronous=NORMAL:
a committed batch survives a crash of the agent; a power cut can lose the last commits.
The forwarder reads the outbox in `seq` order and marks rows delivered on PUBACK only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from agent.alert import Alert
from agent.ingest import DeadLetter

DB_NAME = "agent.db"


@dataclass(frozen=True)
class StoredReading:
    asset: str
    ts: float
    values: list[float]
    score: float | None
    level: str | None
    received_at: float


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    topic: str
    payload: bytes


class Store:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        self.db = Database(conn)
        self._lock = threading.Lock()
        self._create()

    def _create(self) -> None:
        self.db["readings"].create(
            {
                "id": int,
                "asset": str,
                "ts": float,
                "values_json": str,
                "score": float,
                "level": str,
                "received_at": float,
            },
            pk="id",
            if_not_exists=True,
        )
        self.db["outbox"].create(
            {
                "seq": int,
                "alert_id": str,
                "topic": str,
                "payload": str,
                "created_at": float,
                "delivered_at": float,
            },
            pk="seq",
            not_null={"alert_id", "topic", "payload"},
            if_not_exists=True,
        )
        self.db["outbox"].create_index(["alert_id"], unique=True, if_not_exists=True)
        self.db["outbox"].create_index(["delivered_at", "seq"], if_not_exists=True)
        self.db["dead_letters"].create(
            {
                "id": int,
                "topic": str,
                "reason": str,
                "detail": str,
                "received_at": float,
                "size": int,
                "excerpt": str,
            },
            pk="id",
            if_not_exists=True,
        )

    def commit_batch(
        self,
        readings: Iterable[StoredReading],
        alerts: Iterable[tuple[str, Alert]],
        dead: Iterable[DeadLetter],
    ) -> None:
        """One transaction for a micro-batch: all of it is stored, or none of it."""
        now = time.time()
        reading_rows = [
            (r.asset, r.ts, json.dumps(r.values), r.score, r.level, r.received_at) for r in readings
        ]
        alert_rows = [
            (a.id, topic, json.dumps(a.payload, separators=(",", ":")), now) for topic, a in alerts
        ]
        dead_rows = [
            (d.topic, d.reason, d.detail, d.received_at, len(d.payload), d.excerpt) for d in dead
        ]
        with self._lock, self.db.conn:
            self.db.conn.execute("BEGIN")
            self.db.conn.executemany(
                "INSERT INTO readings (asset, ts, values_json, score, level, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                reading_rows,
            )
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO outbox (alert_id, topic, payload, created_at) "
                "VALUES (?, ?, ?, ?)",
                alert_rows,
            )
            self.db.conn.executemany(
                "INSERT INTO dead_letters (topic, reason, detail, received_at, size, excerpt) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                dead_rows,
            )

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT seq, topic, payload FROM outbox WHERE delivered_at IS NULL AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [OutboxItem(seq, topic, payload.encode()) for seq, topic, payload in rows]

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        now = time.time()
        with self._lock, self.db.conn:
            self.db.conn.execute("BEGIN")
            self.db.conn.executemany(
                "UPDATE outbox SET delivered_at = ? WHERE seq = ?", [(now, s) for s in seqs]
            )

    def stats(self) -> dict[str, object]:
        with self._lock:
            q = self.db.conn.execute
            dead_by_reason = dict(q("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))
            return {
                "readings": q("SELECT count(*) FROM readings").fetchone()[0],
                "alerts_pending": q(
                    "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                ).fetchone()[0],
                "alerts_delivered": q(
                    "SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL"
                ).fetchone()[0],
                "dead_letters": sum(dead_by_reason.values()),
                "dead_letters_by_reason": dead_by_reason,
                "database_bytes": self.path.stat().st_size + _wal_bytes(self.path),
            }

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def open_existing(data_dir: str | Path) -> Store:
    """Open a data dir's database for inspection; fail clearly instead of creating one."""
    path = Path(data_dir) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no agent database at {path}")
    return Store(data_dir)
