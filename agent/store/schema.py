"""The database schema, and the migrations that bring a database of an earlier release up to
date in place."""

from __future__ import annotations

import logging
import sqlite3

from agent.readings import OLD_TABLE, pack_old_rows

log = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS "readings" (
   "id" INTEGER PRIMARY KEY,
   "asset" TEXT,
   "n" INTEGER,
   "first_ts" REAL,
   "last_ts" REAL,
   "ts" BLOB,
   "sensor_values" BLOB,
   "score" BLOB,
   "level" BLOB,
   "received_at" BLOB
);
CREATE TABLE IF NOT EXISTS "outbox" (
   "seq" INTEGER PRIMARY KEY,
   "alert_id" TEXT NOT NULL,
   "topic" TEXT NOT NULL,
   "payload" TEXT NOT NULL,
   "created_at" REAL,
   "delivered_at" REAL,
   "expired_at" REAL,
   "created_elapsed" REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS "dead_letters" (
   "id" INTEGER PRIMARY KEY,
   "topic" TEXT,
   "reason" TEXT,
   "detail" TEXT,
   "received_at" REAL,
   "size" INTEGER,
   "excerpt" TEXT
);
CREATE TABLE IF NOT EXISTS "asset_state" (
   "asset" TEXT PRIMARY KEY,
   "window_rows" BLOB,
   "window_n" INTEGER,
   "last_ts" REAL,
   "episode" TEXT,
   "seen_at" REAL,
   "stream" BLOB
);
CREATE TABLE IF NOT EXISTS "asset_resets" (
   "asset" TEXT PRIMARY KEY,
   "requested_at" REAL
);
CREATE TABLE IF NOT EXISTS "ingested" (
   "id" INTEGER PRIMARY KEY,
   "digest" BLOB,
   "gave_readings" INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS "idx_ingested_digest" ON "ingested" ("digest");
CREATE TABLE IF NOT EXISTS "evictions" (
   "reason" TEXT PRIMARY KEY,
   "count" INTEGER
);
CREATE TABLE IF NOT EXISTS "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
"""
# Made by the first batch that has readings waiting to be joined (agent.sources.join), so that
# a database of an agent with no such source is laid out as before.
JOIN_WAITING = """
CREATE TABLE IF NOT EXISTS "join_waiting" (
   "asset" TEXT PRIMARY KEY,
   "waiting" TEXT
)
"""
# After "outbox" gained expired_at (older databases get it by ALTER TABLE first).
_OUTBOX_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS "idx_outbox_alert_id" ON "outbox" ("alert_id");
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq)
    WHERE delivered_at IS NULL AND expired_at IS NULL;
"""


def _create(conn: sqlite3.Connection, pack: bool) -> None:
    """The schema, in plain SQL: every statement is idempotent, and databases written by
    earlier releases are brought up to date in place (readings packed only if `pack`: not
    when a command opens the database for inspection beside an agent)."""
    columns = _columns(conn, "readings")
    if "values_json" in columns:  # the first release stored JSON text
        log.warning("readings of the previous format kept in table readings_v1")
        conn.execute("ALTER TABLE readings RENAME TO readings_v1")
    if pack and "sensor_values" in columns and "n" not in columns:  # a row per reading
        conn.execute(f"ALTER TABLE readings RENAME TO {OLD_TABLE}")
    conn.executescript(_SCHEMA)
    if pack and OLD_TABLE in _tables(conn):
        log.warning("packing readings stored one per row by an earlier release")
        log.warning("packed %d readings", pack_old_rows(conn))
    if "expired_at" not in _columns(conn, "outbox"):  # databases from before expiry existed
        conn.execute('ALTER TABLE "outbox" ADD COLUMN "expired_at" REAL')
    if "seen_at" not in _columns(conn, "asset_state"):  # from before idle assets were forgotten
        conn.execute('ALTER TABLE "asset_state" ADD COLUMN "seen_at" REAL')
        # Counted as heard now, on the elapsed running time the store keeps (agent.elapsed).
        conn.execute(
            'UPDATE "asset_state" SET "seen_at" = coalesce((SELECT CAST(value AS REAL) FROM '
            "meta WHERE key = 'elapsed_s'), 0)"
        )
    if "stream" not in _columns(conn, "asset_state"):  # from before the streaming layer (#15)
        # NULL: each asset's layer starts anew, its window and episode carry on.
        conn.execute('ALTER TABLE "asset_state" ADD COLUMN "stream" BLOB')
    if "created_elapsed" not in _columns(conn, "outbox"):
        # Alerts of a release that aged them by the wall clock start their time to live anew
        # (the database's elapsed time starts at 0 too): a clock that was wrong then cannot
        # expire them now.
        conn.execute('ALTER TABLE "outbox" ADD COLUMN "created_elapsed" REAL NOT NULL DEFAULT 0')
    conn.executescript(_OUTBOX_INDEXES)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
