"""Damaged databases (#13 item 10): save what can still be read, and notice what SQLite drops.

*A damaged page.* The store moves a database that fails its integrity check aside and starts a
fresh one; `salvage` then copies from the moved file what can still be read, most valuable
first: pending alerts (the promise is that they reach upstream), the assets' scoring state (if
the model it belongs to can be read too), then readings, oldest first, up to the storage budget.
Rows are found by key first (the b-tree cells) and read in chunks; a chunk that fails is read
row by row and the unreadable rows are skipped; where even the keys cannot be read, the copy
probes further keys (1, 2, 4, … past the last good one) before giving up on the table.
Limits: rows behind a damaged interior page that no probe reaches are lost; dead letters,
delivered alerts and message digests are not copied.

*A damaged WAL.* After a crash SQLite replays the WAL up to the first frame whose checksum
fails and silently discards the rest, committed transactions included. `wal_damage` reads the
WAL before SQLite does and reports frames of the current WAL generation (same salts as its
header) that lie beyond that point: those were written by committed (or committing)
transactions that are now lost. Limits: damage to the salt of the very last frame, or a WAL
cut at a frame boundary or deleted, looks like an ordinary shorter WAL and is not detected; a
power cut with `storage.synchronous = "normal"` that tears the last commit is reported too,
which is right: acknowledged data is lost either way.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from agent.budget import used_bytes

log = logging.getLogger(__name__)

_CHUNK = 500
_MAX_PROBE = 1 << 24
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # the low bit: checksums of big-endian words
_WAL_HEADER, _FRAME_HEADER = 32, 24
# What the copied rows depend on (their model, their elapsed time) and the history of damage.
_META_KEYS = (
    "elapsed_s",
    "sensors",
    "state_model",
    "state_stream",
    "budget",
    "moved_aside",
    "storage_incidents",
    "storage_incident_counts",
)


def salvage(damaged: Path, conn: sqlite3.Connection, max_bytes: int) -> dict[str, object]:
    """Copy what can be read from `damaged` into `conn` (a fresh database); what was copied,
    by kind, and which tables could not be read at all."""
    report: dict[str, object] = {"pending_alerts": 0, "asset_states": 0, "readings": 0}
    unreadable: list[str] = []
    try:
        src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        log.warning("salvage: cannot open %s (%s)", damaged, exc)
        return {**report, "unreadable": ["database"]}
    try:
        meta = _copy_meta(src, conn)
        tables = [("pending_alerts", "outbox", "seq", _PENDING)]
        if "state_model" in meta:  # windows are only worth keeping for the model they fit
            tables.append(("asset_states", "asset_state", "asset", "1"))
        tables.append(("readings", "readings", "id", "1"))
        for kind, table, key, where in tables:
            try:
                report[kind] = _copy(src, conn, table, key, where, max_bytes)
            except sqlite3.DatabaseError as exc:  # reading it, or (a full disk) copying it
                log.warning("salvage: %s not copied (%s)", table, exc)
                unreadable.append(table)
        if "elapsed_s" not in meta:
            _restart_ages(conn)
    finally:
        src.close()
    if unreadable:
        report["unreadable"] = unreadable
    return report


_PENDING = "delivered_at IS NULL AND expired_at IS NULL"


def _restart_ages(conn: sqlite3.Connection) -> None:
    """The old elapsed time is unreadable, so the copied alerts' ages are unknown: each gets a
    whole time to live from now rather than one measured against the wrong origin."""
    try:
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE outbox SET created_elapsed = 0")
    except sqlite3.DatabaseError as exc:
        log.warning("salvage: alert ages not reset (%s)", exc)


def _copy_meta(src: sqlite3.Connection, dst: sqlite3.Connection) -> dict[str, str]:
    """The meta rows of _META_KEYS that can be read."""
    meta: dict[str, str] = {}
    for key in _META_KEYS:
        try:
            row = src.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            log.warning("salvage: meta %s unreadable (%s)", key, exc)
            continue
        if row is not None:
            meta[key] = row[0]
    with dst:
        dst.execute("BEGIN")
        dst.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
    return meta


def _copy(
    src: sqlite3.Connection, dst: sqlite3.Connection, table: str, key: str, where: str, cap: int
) -> int:
    """Copy the readable rows of `table` (those passing `where`), a chunk per transaction,
    until the copy holds `cap` bytes; return how many rows were copied."""
    columns = _columns(src, table) & _columns(dst, table)
    names = ", ".join(f'"{c}"' for c in sorted(columns))
    insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    copied = 0
    for keys in _key_chunks(src, table, key, where):
        rows = list(_rows(src, table, key, names, keys))
        with dst:
            dst.execute("BEGIN")
            dst.executemany(insert, rows)
        copied += len(rows)
        if used_bytes(dst) >= cap:
            log.warning("salvage: %s stopped at the storage budget", table)
            break
    return copied


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _key_chunks(
    src: sqlite3.Connection, table: str, key: str, where: str
) -> Iterator[list[object]]:
    """Keys in order, a chunk at a time; past an unreadable stretch of an integer key, probe."""
    sql = f'SELECT "{key}" FROM "{table}" WHERE ({where}) AND "{key}" > ? ORDER BY 1 LIMIT ?'
    after: object = -(2**63) if key != "asset" else ""
    while True:
        try:
            keys = [row[0] for row in src.execute(sql, (after, _CHUNK))]
        except sqlite3.DatabaseError as exc:
            if not isinstance(after, int):
                raise
            found = _probe(src, sql, after)
            if found is None:
                log.warning("salvage: %s unreadable after %s=%s (%s)", table, key, after, exc)
                return
            after, keys = found
        if not keys:
            return
        yield keys
        after = keys[-1]


def _probe(src: sqlite3.Connection, sql: str, after: int) -> tuple[int, list[object]] | None:
    step = 1
    while step <= _MAX_PROBE:
        try:
            return after + step, [row[0] for row in src.execute(sql, (after + step, _CHUNK))]
        except sqlite3.DatabaseError:
            step *= 2
    return None


def _rows(
    src: sqlite3.Connection, table: str, key: str, names: str, keys: list[object]
) -> Iterator[tuple]:
    """The rows of `keys`: a chunk at once, or one by one (skipping what fails) if it fails."""
    sql = f'SELECT {names} FROM "{table}" WHERE "{key}" IN ({", ".join("?" * len(keys))})'
    try:
        yield from src.execute(sql, keys).fetchall()
        return
    except sqlite3.DatabaseError as exc:
        log.info("salvage: a chunk of %s is damaged (%s); reading it row by row", table, exc)
    one = f'SELECT {names} FROM "{table}" WHERE "{key}" = ?'
    for k in keys:
        try:
            yield from src.execute(one, (k,)).fetchall()
        except sqlite3.DatabaseError as exc:
            log.warning("salvage: %s row %s=%s unreadable (%s)", table, key, k, exc)


def wal_damage(db_path: Path) -> str | None:
    """Before SQLite opens `db_path`: what its WAL holds that SQLite will discard, or None.
    Reads a frame at a time (the WAL can be large when checkpoints were held up)."""
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        f = wal.open("rb")
    except FileNotFoundError:
        return None
    with f:
        header = f.read(_WAL_HEADER)
        if len(header) < _WAL_HEADER or not f.read(1):
            return None  # empty, or a header alone: nothing to lose
        magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", header)
        big = bool(magic & 1)
        if (
            magic not in _WAL_MAGIC
            or not page_size
            or _checksum(header[:24], 0, 0, big) != (c1, c2)
        ):
            return f"WAL header damaged: SQLite ignores all {wal.stat().st_size} bytes of the WAL"
        frames = (wal.stat().st_size - _WAL_HEADER) // (_FRAME_HEADER + page_size)
        f.seek(_WAL_HEADER)
        s = (c1, c2)
        for i in range(frames):
            data = f.read(_FRAME_HEADER + page_size)
            head = struct.unpack(">6I", data[:_FRAME_HEADER])
            if head[2:4] == (salt1, salt2):
                s = _checksum(data[:8] + data[_FRAME_HEADER:], *s, big)
                if s == head[4:6]:
                    continue
            # SQLite stops here. Commits of this WAL generation from here on are lost; frames
            # without a commit are those of a transaction that rolled back, or of an older
            # generation.
            f.seek(_WAL_HEADER + i * (_FRAME_HEADER + page_size))
            lost = _commits(f, frames - i, page_size, (salt1, salt2))
            if not lost:
                return None
            return (
                f"WAL frame {i + 1} of {frames} fails its checksum: SQLite discards it and the "
                f"rest of the WAL, {lost} committed transaction(s)"
            )
    return None


def _commits(f: BinaryIO, frames: int, page_size: int, salts: tuple[int, int]) -> int:
    """Commit frames (a non-zero database size) of the WAL generation `salts` among the next
    `frames` frames of `f`."""
    n = 0
    for _ in range(frames):
        _page, size, salt1, salt2 = struct.unpack(">4I", f.read(16))
        n += size != 0 and (salt1, salt2) == salts
        f.seek(_FRAME_HEADER - 16 + page_size, 1)
    return n


def _checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    """SQLite's WAL checksum (https://www.sqlite.org/fileformat.html#checksum_algorithm)."""
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1
