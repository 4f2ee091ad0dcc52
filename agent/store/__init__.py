"""Store stage: readings, the alert outbox, dead letters and the scoring state in one SQLite file.

A micro-batch commits in one transaction: its readings, alerts, dead letters, the window and
episode state of the assets it touched, and the digests of the messages it consumed. The runtime
acknowledges those messages to the local broker only after this commit, so after a crash every
message is either committed (and recognised if redelivered) or redelivered and applied once.

WAL with `synchronous` from config: NORMAL survives a crash of the agent or the OS process
table, FULL also a power cut (each commit waits for fsync). Space is bounded by `Budget`; when
SQLite reports the disk (or the hard cap) full, room is made and the batch retried, and only
then are its readings shed. A database found corrupt at start is moved aside, never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from agent.alert import Alert
from agent.budget import Budget, count_eviction, evict_chunk, evict_over_budget, used_bytes
from agent.elapsed import Elapsed
from agent.ingest import DeadLetter
from agent.isotime import now_iso
from agent.readings import INSERT, OLD_TABLE, ReadingBlock, count_readings, pack_old_rows
from agent.salvage import salvage, wal_damage
from agent.window import WindowState

log = logging.getLogger(__name__)

DB_NAME = "agent.db"
RECENT_DIGESTS = 10_000  # digests of applied messages kept: far more than can be unacknowledged
# Errors that say the storage, not the statement, is at fault (primary result codes): the
# caller keeps what it could not write and tries again. Making room can only help the first two.
_STORAGE_ERRORS = {
    13: "disk or hard cap full",  # SQLITE_FULL
    10: "I/O error",  # SQLITE_IOERR
    8: "database is read-only",  # SQLITE_READONLY: a read-only mount or file (#13 item 9)
    3: "permission denied",  # SQLITE_PERM
    14: "cannot open a database file",  # SQLITE_CANTOPEN (the WAL or shared memory)
}
_ROOM_MAY_HELP = {13, 10}
_INCIDENTS, _INCIDENT_COUNTS = "storage_incidents", "storage_incident_counts"  # meta keys
_INCIDENTS_KEPT = 10
# Elapsed time is saved with a commit at most every _SAVE_ELAPSED_COMMIT_S (a crash forgets no
# more than that; saving it with every one-reading batch would write one more page each), and
# by an idle agent every _SAVE_ELAPSED_IDLE_S (SD card wear).
_SAVE_ELAPSED_COMMIT_S = 1.0
_SAVE_ELAPSED_IDLE_S = 60.0
_CORRUPT_ERRORS = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
# The WAL is checkpointed into the database at this many pages (SQLite's default is 1000, 4 MiB)
# and cut back to this size after: on a small or nearly full disk the WAL must not be what takes
# the last free space, since copying it back needs room in the database file too.
_WAL_CHECKPOINT_PAGES = 256
_WAL_KEEP_BYTES = 1024 * 1024
# SQLite's page cache per connection (its default is 2,000 KiB). Writes go to the right edge of
# each index and eviction to the left, so a small cache serves; measured, 2,000 -> 512 KiB saved
# about 1.5 MiB of the agent's peak memory and no drain rate.
_PAGE_CACHE_KIB = 512
_DISK_ROOM_BYTES = 4 * 1024 * 1024  # more free than this: a full database is the hard cap


class CorruptDatabase(sqlite3.DatabaseError):
    """SQLite opened the file, but its integrity check found damage."""


class StorageUnavailable(RuntimeError):
    """A write could not be committed: for a batch, even after making room and shedding its
    readings."""


@dataclass(frozen=True)
class AssetState:
    asset: str
    window: WindowState
    episode: str  # AlertTracker.snapshot

    def row(self) -> tuple[object, ...]:
        """As `asset_state` stores it."""
        w = self.window
        return (self.asset, w.rows, w.n_rows, w.last_ts, self.episode, w.seen_at)


@dataclass
class Batch:
    """Everything one micro-batch changes, committed together or not at all."""

    readings: list[ReadingBlock] = field(default_factory=list)  # one per asset
    alerts: list[tuple[str, Alert]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[AssetState] = field(default_factory=list)
    digests: list[tuple[bytes, bool]] = field(default_factory=list)  # and: gave readings


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    topic: str
    payload: bytes
    created_elapsed: float  # the store's elapsed time when it was created (see agent.elapsed)


@dataclass
class Figures:
    """Row counts kept by every write, so that a status or a scrape reads them without a scan
    of the tables (#13 item 11: a count of readings took 0.26 s under the store lock on a
    250 MiB database). Counted once at open; an outbox row is delivered if marked so, else
    expired if marked so, else pending, as `Store.stats` counts them."""

    readings: int = 0
    alerts_pending: int = 0
    alerts_delivered: int = 0
    alerts_expired: int = 0
    dead_letters: int = 0
    evictions_by_reason: dict[str, int] = field(default_factory=dict)

    def evicted(self, reason: str, n: int) -> None:
        name = _EVICTED_FROM.get(reason)
        if name is not None:
            setattr(self, name, getattr(self, name) - n)
        self.evictions_by_reason[reason] = self.evictions_by_reason.get(reason, 0) + n


# Eviction reasons (agent.budget) and the figure whose rows they remove; shed rows never were.
_EVICTED_FROM = {
    "readings": "readings",
    "dead_letters": "dead_letters",
    "delivered_alerts": "alerts_delivered",
    "expired_alerts": "alerts_expired",
    "pending_alerts_at_hard_cap": "alerts_pending",
}


class Store:
    def __init__(
        self,
        data_dir: str | Path,
        budget: Budget | None = None,
        synchronous: str = "normal",
        recover: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open or create the database. `recover` (the agent's own open) moves a corrupt one
        aside and starts fresh, and packs readings an earlier release stored a row each;
        inspection (`open_existing`) does neither. `monotonic` drives the elapsed time alert
        ages are measured on (injectable for tests)."""
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.budget = budget or Budget()
        self._synchronous = synchronous
        self._recover = recover
        self._lock = threading.Lock()
        self._figures_lock = threading.Lock()
        self._problems: dict[str, str] = {}  # what failed, by kind of write, until it succeeds
        self.moved_aside: Path | None = None
        wal_problem = wal_damage(self.path) if recover else None  # before SQLite drops frames
        kept_wal = _keep_wal(self.path) if wal_problem is not None else None  # before it writes
        corrupt: dict[str, object] | None = None
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not (recover and _is_corrupt(exc)):
                raise
            try:
                self.moved_aside = _move_aside(self.path)
            except OSError as move_failed:  # a read-only folder: say so, not a traceback
                raise CorruptDatabase(f"{exc}; cannot move it aside: {move_failed}") from exc
            log.error(
                "corrupt database moved aside to %s (%s); starting fresh", self.moved_aside, exc
            )
            self._conn = self._open()
            corrupt = {"detail": str(exc), "moved_to": str(self.moved_aside)}
            corrupt["salvaged"] = salvage(self.moved_aside, self._conn, self.budget.max_bytes)
            self._append_meta_list("moved_aside", str(self.moved_aside))
        self.incidents: list[dict[str, object]] = json.loads(self.get_meta(_INCIDENTS) or "[]")
        self.incident_counts: dict[str, int] = json.loads(self.get_meta(_INCIDENT_COUNTS) or "{}")
        if corrupt is not None:
            self._record_incident("corrupt", corrupt)
        if wal_problem is not None:
            self._record_incident("wal_damaged", {"detail": wal_problem, "kept": kept_wal})
        if budget is None:
            self.budget = Budget.from_meta(self.get_meta("budget"))
        elif self.get_meta("budget") != self.budget.to_meta():
            self.set_meta("budget", self.budget.to_meta())
        self._last_digest_id = self._q("SELECT coalesce(max(id), 0) FROM ingested")[0][0]
        self._elapsed = Elapsed(Elapsed.parse(self.get_meta("elapsed_s")), monotonic)
        self._elapsed_saved = self._elapsed.now()
        with self._lock:
            self._figures = _count(self.conn)

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._address(), check_same_thread=False, isolation_level=None, uri=True
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
            # After a checkpoint the WAL is cut back to this, so it does not keep its peak size.
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
            _create(conn, pack=self._recover)
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise CorruptDatabase("integrity check failed: " + "; ".join(problems[:3]))
            self.budget.apply_hard_cap(conn)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _address(self) -> str:
        """The database as SQLite is to open it. In a folder that cannot be written (a file
        system remounted read-only after errors, as SD cards are) SQLite cannot make the WAL's
        shared-memory file and refuses to open at all; opened immutable, the database is read
        as it is, its pending alerts go upstream, and every write fails as on a read-only file,
        which the status reports (#13 item 9: the agent must not go down for it). A WAL with
        its shared-memory file beside it SQLite reads read-only; one without is left for the
        next start on a writable folder."""
        wal_files = [self.path.with_name(self.path.name + end) for end in ("-wal", "-shm")]
        if (
            not self.path.is_file()
            or os.access(self.path.parent, os.W_OK)
            or all(f.is_file() for f in wal_files)
        ):
            return str(self.path)
        log.error(
            "%s cannot be written (read-only file system?): opening %s read-only; nothing "
            "new is stored until the agent is restarted on a writable folder",
            self.path.parent,
            self.path.name,
        )
        return f"file:{quote(str(self.path))}?immutable=1"

    def _q(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    # -- the pipeline's side ------------------------------------------------------------------

    def commit_batch(self, batch: Batch) -> None:
        """Commit `batch`; when space runs out, free a chunk and retry, by the policy.

        Old readings, dead letters and delivered alerts go first; then the batch's own readings
        and dead letters are shed (counted); pending alerts go only at the hard cap, never
        because the disk is full. Raises StorageUnavailable when even then the batch does not
        fit: the caller must not acknowledge its messages.
        """
        shed, checkpointed = False, False
        while True:
            try:
                self._commit(batch, shed)
                break
            except sqlite3.Error as exc:
                problem = _storage_problem(exc)
                if problem is None:
                    raise
                if _room_may_help(exc):
                    if not checkpointed:  # the WAL itself may be what fills the disk
                        checkpointed = True
                        if self._checkpoint():
                            continue
                    if self._evict(self._evict_chunk(pending_too=False)):
                        continue
                    if not shed and (batch.readings or batch.dead):
                        log.warning("%s: shedding the batch's readings and dead letters", problem)
                        shed = True
                        continue
                    if self._at_hard_cap() and self._evict(self._evict_chunk(pending_too=True)):
                        continue
                self._problems["commit"] = problem
                raise StorageUnavailable(f"{self.path}: {problem}: {exc}") from exc
        self._problems.pop("commit", None)
        self._evict(lambda: evict_over_budget(self.conn, self.budget))

    def _commit(self, batch: Batch, shed: bool) -> None:
        with self._lock:
            added = self._write(batch, shed)
            n_readings = sum(map(len, batch.readings))
            with self._figures_lock:
                f = self._figures
                f.alerts_pending += added
                if not shed:
                    f.readings += n_readings
                    f.dead_letters += len(batch.dead)
                    return
                for reason, n in (
                    ("shed_readings", n_readings),
                    ("shed_dead_letters", len(batch.dead)),
                ):
                    if n:  # as count_eviction: no row for nothing
                        f.evicted(reason, n)

    def _write(self, batch: Batch, shed: bool) -> int:
        """One transaction; returns how many alerts it added to the outbox."""
        now, elapsed = time.time(), self._elapsed.now()
        with self.conn:
            c = self.conn
            c.execute("BEGIN")
            if shed:
                count_eviction(c, "shed_readings", sum(map(len, batch.readings)))
                count_eviction(c, "shed_dead_letters", len(batch.dead))
            else:
                c.executemany(INSERT, [block.row() for block in batch.readings])
                c.executemany(
                    "INSERT INTO dead_letters (topic, reason, detail, received_at, size, excerpt) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (d.topic, d.reason, d.detail, d.received_at, len(d.payload), d.excerpt)
                        for d in batch.dead
                    ],
                )
            added = c.executemany(
                "INSERT OR IGNORE INTO outbox (alert_id, topic, payload, created_at, "
                "created_elapsed) VALUES (?, ?, ?, ?, ?)",
                [
                    (a.id, topic, json.dumps(a.payload, separators=(",", ":")), now, elapsed)
                    for topic, a in batch.alerts
                ],
            ).rowcount
            c.executemany(
                "INSERT OR REPLACE INTO asset_state (asset, window_rows, window_n, last_ts, "
                "episode, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
                [s.row() for s in batch.states],
            )
            self._record_digests(c, batch.digests)
            if elapsed - self._elapsed_saved >= _SAVE_ELAPSED_COMMIT_S:
                self._save_elapsed(c, elapsed)
        return max(added, 0)

    def _save_elapsed(self, c: sqlite3.Connection, elapsed: float) -> None:
        """In the caller's transaction: one row (see agent.elapsed)."""
        c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('elapsed_s', ?)", (f"{elapsed:.3f}",)
        )
        self._elapsed_saved = elapsed

    def elapsed(self) -> float:
        """Seconds of agent running time this database has seen (see agent.elapsed)."""
        return self._elapsed.now()

    def _record_digests(self, c: sqlite3.Connection, digests: list[tuple[bytes, bool]]) -> None:
        if not digests:
            return
        first = self._last_digest_id + 1
        c.executemany(
            "INSERT OR REPLACE INTO ingested (id, digest, gave_readings) VALUES (?, ?, ?)",
            [(n, d, r) for n, (d, r) in enumerate(digests, start=first)],
        )
        self._last_digest_id = first + len(digests) - 1
        c.execute("DELETE FROM ingested WHERE id <= ?", (self._last_digest_id - RECENT_DIGESTS,))

    def _evict_chunk(self, pending_too: bool) -> Callable[[], dict[str, int]]:
        return lambda: evict_chunk(self.conn, pending_too)

    def _evict(self, policy: Callable[[], dict[str, int]]) -> bool:
        """Run an eviction policy under the lock; log and return whether anything went."""
        try:
            with self._lock:
                evicted = policy()
                with self._figures_lock:
                    for reason, n in evicted.items():
                        self._figures.evicted(reason, n)
        except sqlite3.Error as exc:
            if _storage_problem(exc) is None:
                raise
            log.warning("eviction failed too (%s)", _storage_problem(exc))
            self._recount()  # chunks deleted before the failure are not in `evicted`
            return False
        for reason, n in evicted.items():
            log.warning("evicted %d %s", n, reason.replace("_", " "))
        return bool(evicted)

    def _recount(self) -> None:
        """Count the figures afresh: only after an eviction failed halfway, which is rare."""
        try:
            with self._lock:
                figures = _count(self.conn)
        except sqlite3.Error as exc:
            log.warning("cannot recount the buffer (%s); figures may be off", exc)
            return
        with self._figures_lock:
            self._figures = figures

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it, giving its disk space back."""
        try:
            with self._lock:
                busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            if _storage_problem(exc) is None:
                raise
            return False
        return busy == 0

    def _at_hard_cap(self) -> bool:
        """Whether the database, not the disk, is full: the disk still has room."""
        disk = os.statvfs(self.path.parent)
        return disk.f_bavail * disk.f_frsize > _DISK_ROOM_BYTES

    def recent_digests(self, limit: int) -> list[tuple[bytes, bool]]:
        """Digests of the most recently applied messages (and whether each gave readings),
        oldest first."""
        rows = self._q(
            "SELECT digest, gave_readings FROM ingested ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [(digest, bool(gave)) for digest, gave in reversed(rows)]

    def load_states(
        self, model_sha256: str, limit: int = -1, seen_after: float = float("-inf")
    ) -> list[AssetState]:
        """The committed scoring state, if it was written by this same model; else none. At
        most `limit` assets (-1: all), those the gateway heard from last first, and none not
        heard from since `seen_after`: a restart restores no more than the agent may hold."""
        saved = self.get_meta("state_model")
        if saved is not None and saved != model_sha256:
            log.warning("model changed since the last run; windows and episodes start afresh")
            with self._lock, self.conn:
                self.conn.execute("BEGIN")
                self.conn.execute("DELETE FROM asset_state")
        if saved != model_sha256:
            self.set_meta("state_model", model_sha256)
        rows = self._q(
            "SELECT asset, window_rows, window_n, last_ts, episode, seen_at FROM asset_state "
            "WHERE seen_at >= ? ORDER BY seen_at DESC, last_ts DESC LIMIT ?",
            (seen_after, limit),
        )
        return [
            AssetState(a, WindowState(rows_, n, ts, seen), ep) for a, rows_, n, ts, ep, seen in rows
        ]

    def prune_states(self, keep: int, seen_after: float) -> int:
        """Delete the state `load_states(…, keep, seen_after)` leaves out; return how many
        assets went. Raises StorageUnavailable when the disk is full."""
        idle, total = self._q(
            "SELECT count(*) FILTER (WHERE seen_at < ?), count(*) FROM asset_state", (seen_after,)
        )[0]
        if not idle and total <= keep:  # no write: the disk may be full, the folder read-only
            return 0
        with self._storage_errors("forgetting assets"), self._lock, self.conn:
            self.conn.execute("BEGIN")
            return self.conn.execute(
                "DELETE FROM asset_state WHERE seen_at < ? OR asset NOT IN (SELECT asset FROM "
                "asset_state WHERE seen_at >= ? ORDER BY seen_at DESC, last_ts DESC LIMIT ?)",
                (seen_after, seen_after, keep),
            ).rowcount

    def forget_assets(self, assets: list[str]) -> None:
        """Delete these assets' state and any reset requested for them, in one transaction.
        Raises StorageUnavailable when the disk is full."""
        names = [(a,) for a in assets]
        with self._storage_errors("forgetting assets"), self._lock, self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("DELETE FROM asset_state WHERE asset = ?", names)
            self.conn.executemany("DELETE FROM asset_resets WHERE asset = ?", names)

    def reset_requests(self) -> list[str]:
        """Assets an operator reset (`edge-agent reset-asset`) since the agent last looked."""
        return [asset for (asset,) in self._q("SELECT asset FROM asset_resets")]

    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )

    def _record_incident(self, kind: str, facts: dict[str, object]) -> None:
        """Remember damage found at open (the last _INCIDENTS_KEPT, and a count by kind, in
        `meta`), for the status, the metrics and `buffer stats`; and log it."""
        incident = {"kind": kind, "at": now_iso(), **facts}
        log.error("storage incident: %s", json.dumps(incident))
        self.incidents = [*self.incidents, incident][-_INCIDENTS_KEPT:]
        self.incident_counts = {**self.incident_counts, kind: self.incident_counts.get(kind, 0) + 1}
        try:
            with self._storage_errors("recording a storage incident"):
                self.set_meta(_INCIDENTS, json.dumps(self.incidents))
                self.set_meta(_INCIDENT_COUNTS, json.dumps(self.incident_counts))
        except StorageUnavailable as exc:
            log.warning("storage incident not recorded in the database (%s)", exc)

    def _append_meta_list(self, key: str, item: str) -> None:
        self.set_meta(key, json.dumps([*json.loads(self.get_meta(key) or "[]"), item]))

    # -- the forwarder's side -----------------------------------------------------------------

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        """Raises StorageUnavailable when the disk cannot be read."""
        with self._storage_errors("reading the outbox"):
            rows = self._q(
                "SELECT seq, topic, payload, created_elapsed FROM outbox "
                "WHERE delivered_at IS NULL AND expired_at IS NULL AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        return [OutboxItem(seq, topic, payload.encode(), at) for seq, topic, payload, at in rows]

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        """Raises StorageUnavailable when the disk is full or read-only: the caller keeps the
        seqs."""
        now = time.time()
        with self._storage_errors("recording deliveries"), self._lock:
            with self.conn:
                self.conn.execute("BEGIN")
                was_expired = self.conn.execute(
                    "UPDATE outbox SET delivered_at = ? WHERE delivered_at IS NULL "
                    "AND seq IN (SELECT value FROM json_each(?)) RETURNING expired_at IS NOT NULL",
                    (now, json.dumps(list(seqs))),
                ).fetchall()
            expired = sum(row[0] for row in was_expired)
            with self._figures_lock:
                self._figures.alerts_delivered += len(was_expired)
                self._figures.alerts_expired -= expired
                self._figures.alerts_pending -= len(was_expired) - expired

    def expire(self, older_than_s: float) -> int:
        """Mark pending alerts older than `older_than_s` of elapsed time expired (see
        agent.elapsed: no step of the wall clock makes an alert older); return how many.

        Raises StorageUnavailable when the disk is full or read-only (they are then tried again
        later)."""
        elapsed = self._elapsed.now()
        with self._storage_errors("expiring alerts"), self._lock:
            with self.conn:
                self.conn.execute("BEGIN")
                n = self.conn.execute(
                    "UPDATE outbox SET expired_at = ? WHERE delivered_at IS NULL "
                    "AND expired_at IS NULL AND created_elapsed < ?",
                    (time.time(), elapsed - older_than_s),
                ).rowcount
                if elapsed - self._elapsed_saved >= _SAVE_ELAPSED_IDLE_S:
                    self._save_elapsed(self.conn, elapsed)
            with self._figures_lock:
                self._figures.alerts_pending -= n
                self._figures.alerts_expired += n
        return n

    @contextmanager
    def _storage_errors(self, doing: str) -> Iterator[None]:
        """A storage failure (full, I/O, read-only) as StorageUnavailable, remembered for the
        status until the same kind of work succeeds; any other error as it is."""
        try:
            yield
        except sqlite3.Error as exc:
            problem = _storage_problem(exc)
            if problem is None:
                raise
            self._problems[doing] = problem
            raise StorageUnavailable(f"{self.path}: {problem}: {exc}") from exc
        self._problems.pop(doing, None)

    def problem(self) -> str | None:
        """What is failing now ("recording deliveries: database is read-only"), or None."""
        problems = dict(self._problems)
        return "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())) or None

    # -- inspection ---------------------------------------------------------------------------

    def figures(self) -> dict[str, object]:
        """The buffer's figures without scanning a table: for the status and /metrics, which
        must not hold up commits. Equal to the same keys of `stats` (a test holds them so)."""
        with self._figures_lock:
            f = self._figures
            counts = {
                "readings": f.readings,
                "alerts_pending": f.alerts_pending,
                "alerts_delivered": f.alerts_delivered,
                "alerts_expired": f.alerts_expired,
                "dead_letters": f.dead_letters,
                "evictions_by_reason": dict(f.evictions_by_reason),
            }
        with self._lock:  # three page-header reads
            used = used_bytes(self.conn)
        return {
            **counts,
            "used_bytes": used,
            "database_bytes": _file_bytes(self.path) + _wal_bytes(self.path),
        }

    def stats(self) -> dict[str, object]:
        """Everything, counted from the tables: for inspection (`buffer stats`, doctor)."""
        with self._lock:
            q = self.conn.execute
            dead_by_reason = dict(q("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))
            outbox = dict(
                q(
                    "SELECT CASE WHEN delivered_at IS NOT NULL THEN 'delivered' "
                    "WHEN expired_at IS NOT NULL THEN 'expired' ELSE 'pending' END, count(*) "
                    "FROM outbox GROUP BY 1"
                )
            )
            meta = dict(q("SELECT key, value FROM meta"))
            return {
                "readings": count_readings(self.conn),
                "alerts_pending": outbox.get("pending", 0),
                "alerts_delivered": outbox.get("delivered", 0),
                "alerts_expired": outbox.get("expired", 0),
                "dead_letters": sum(dead_by_reason.values()),
                "dead_letters_by_reason": dead_by_reason,
                "evictions_by_reason": dict(q("SELECT reason, count FROM evictions")),
                "database_bytes": _file_bytes(self.path) + _wal_bytes(self.path),
                "used_bytes": used_bytes(self.conn),
                "budget_bytes": self.budget.max_bytes,
                "hard_cap_bytes": self.budget.hard_cap_bytes,
                "moved_aside": json.loads(meta.get("moved_aside", "[]")),
                "storage_incidents": json.loads(meta.get(_INCIDENTS, "[]")),
            }

    def close(self) -> None:
        """Save the elapsed time (the agent's own store; inspection must not) and close."""
        try:
            if self._recover:
                with self._storage_errors("saving elapsed time"), self._lock, self.conn:
                    self.conn.execute("BEGIN")
                    self._save_elapsed(self.conn, self._elapsed.now())
        except StorageUnavailable as exc:
            log.warning("elapsed time not saved at close (%s)", exc)
        with self._lock:
            self.conn.close()


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
   "seen_at" REAL
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


def _storage_problem(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _STORAGE_ERRORS.get(code & 0xFF)


def _room_may_help(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _ROOM_MAY_HELP


def _count(conn: sqlite3.Connection) -> Figures:
    """The figures from the tables: once at open (a scan of each)."""
    outbox = dict(
        conn.execute(
            "SELECT CASE WHEN delivered_at IS NOT NULL THEN 'delivered' "
            "WHEN expired_at IS NOT NULL THEN 'expired' ELSE 'pending' END, count(*) "
            "FROM outbox GROUP BY 1"
        ).fetchall()
    )
    return Figures(
        readings=count_readings(conn),
        alerts_pending=outbox.get("pending", 0),
        alerts_delivered=outbox.get("delivered", 0),
        alerts_expired=outbox.get("expired", 0),
        dead_letters=conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
        evictions_by_reason=dict(conn.execute("SELECT reason, count FROM evictions").fetchall()),
    )


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, CorruptDatabase) or (code is not None and code & 0xFF in _CORRUPT_ERRORS)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _keep_wal(path: Path) -> str | None:
    """Copy a damaged WAL aside before SQLite reuses it: evidence, never deleted."""
    wal, copy = (
        path.with_name(path.name + "-wal"),
        path.with_name(f"{path.name}-wal.damaged-{_stamp()}"),
    )
    try:
        shutil.copyfile(wal, copy)
    except OSError as exc:
        log.warning("cannot keep a copy of the damaged WAL (%s)", exc)
        return None
    return str(copy)


def _move_aside(path: Path) -> Path:
    """Rename the database and its WAL files with a timestamp; never delete evidence."""
    target = path.with_name(f"{path.name}.corrupt-{_stamp()}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(target.with_name(target.name + suffix))
    return target


def _file_bytes(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def reset_asset(data_dir: str | Path, asset: str) -> bool:
    """Delete one asset's window and episode, and ask a running agent to drop its copy (it
    looks between batches, at least once a second; a stopped one at its next start). False
    when the asset had no state."""
    store = open_existing(data_dir)
    try:
        with store._storage_errors("resetting an asset"), store._lock, store.conn:
            store.conn.execute("BEGIN IMMEDIATE")
            found = store.conn.execute("DELETE FROM asset_state WHERE asset = ?", (asset,))
            if found.rowcount:
                store.conn.execute(
                    "INSERT OR REPLACE INTO asset_resets (asset, requested_at) VALUES (?, ?)",
                    (asset, time.time()),
                )
        return bool(found.rowcount)
    finally:
        store.close()


def open_existing(data_dir: str | Path) -> Store:
    """Open a data dir's database for inspection; fail clearly instead of creating one."""
    path = Path(data_dir) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no agent database at {path}")
    return Store(data_dir, recover=False)
