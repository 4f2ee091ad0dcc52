"""Storage budget: what leaves the database first when it outgrows its bytes.

Oldest readings go first, then dead letters, then delivered (or expired) alerts. Alerts that
are still pending are evicted only at the hard cap, which SQLite itself enforces through
`max_page_count`: a commit that would pass it fails with SQLITE_FULL, the store asks for room,
and only if nothing else is left does the oldest pending alert go. Every row evicted is counted
by reason in the `evictions` table, in the same transaction as its delete.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass

MIB = 1024 * 1024
CHUNK_ROWS = 2000
PENDING_CHUNK_ROWS = 50
LOW_WATER = 0.95  # evict down to this share of the budget, so eviction is not run every batch


@dataclass(frozen=True)
class Budget:
    max_bytes: int = 256 * MIB
    hard_cap_bytes: int = 512 * MIB

    def apply_hard_cap(self, conn: sqlite3.Connection) -> None:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(16, self.hard_cap_bytes // page_size)}")

    def to_meta(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_meta(cls, text: str | None) -> Budget:
        return cls(**json.loads(text)) if text else cls()


@dataclass(frozen=True)
class _Class:
    reason: str
    table: str
    key: str
    where: str
    chunk: int = CHUNK_ROWS  # what one eviction step frees, counted as below
    counted: str = "1"  # what a row counts for: a `readings` row holds `n` readings


_ORDER = (
    _Class("readings", "readings", "id", "1", counted="n"),
    _Class("dead_letters", "dead_letters", "id", "1"),
    _Class("delivered_alerts", "outbox", "seq", "delivered_at IS NOT NULL"),
    # Not delivered: a row both expired and delivered counts as delivered (Store.figures).
    _Class("expired_alerts", "outbox", "seq", "expired_at IS NOT NULL AND delivered_at IS NULL"),
)
_PENDING = _Class(
    "pending_alerts_at_hard_cap",
    "outbox",
    "seq",
    "delivered_at IS NULL AND expired_at IS NULL",
    PENDING_CHUNK_ROWS,
)


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in pages that hold data (the file keeps freed pages for reuse)."""
    page_count, free, size = (
        conn.execute(f"PRAGMA {p}").fetchone()[0]
        for p in ("page_count", "freelist_count", "page_size")
    )
    return (page_count - free) * size


def evict_over_budget(conn: sqlite3.Connection, budget: Budget) -> dict[str, int]:
    """Above the budget, evict down to LOW_WATER of it; pending alerts are never touched here.

    Returns rows evicted by reason.
    """
    evicted: dict[str, int] = {}
    if used_bytes(conn) <= budget.max_bytes:
        return evicted
    target = budget.max_bytes * LOW_WATER
    for cls in _ORDER:
        while used_bytes(conn) > target and (n := _delete_chunk(conn, cls)):
            evicted[cls.reason] = evicted.get(cls.reason, 0) + n
    return evicted


def evict_chunk(conn: sqlite3.Connection, pending_too: bool) -> dict[str, int]:
    """Free one chunk, from the first class that has rows (a commit did not fit)."""
    for cls in (*_ORDER, *((_PENDING,) if pending_too else ())):
        if n := _delete_chunk(conn, cls):
            return {cls.reason: n}
    return {}


def _delete_chunk(conn: sqlite3.Connection, cls: _Class) -> int:
    """Delete the oldest rows of a class holding up to `chunk` of what it counts (at least
    one row: a `readings` row holds a batch's readings of one asset); return how many."""
    with conn:
        conn.execute("BEGIN")
        deleted = conn.execute(
            f"DELETE FROM {cls.table} WHERE {cls.key} IN (SELECT {cls.key} FROM ("
            f"SELECT {cls.key}, c, sum(c) OVER (ORDER BY {cls.key}) AS upto FROM ("
            f"SELECT {cls.key}, {cls.counted} AS c FROM {cls.table} WHERE {cls.where} "
            f"ORDER BY {cls.key} LIMIT ?)) WHERE upto - c < ?) RETURNING {cls.counted}",
            (cls.chunk, cls.chunk),
        ).fetchall()
        n = sum(row[0] for row in deleted)
        count_eviction(conn, cls.reason, n)
    return n


def count_eviction(conn: sqlite3.Connection, reason: str, n: int) -> None:
    """Add to the eviction counter, inside the caller's transaction."""
    if n:
        conn.execute(
            "INSERT INTO evictions (reason, count) VALUES (?, ?) "
            "ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count",
            (reason, n),
        )
