"""The pipeline's side of the store: `Store.commit_batch`, one transaction per micro-batch, and
what it does when space runs out (checkpoint, evict by the policy of agent.budget, shed)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable

from agent.budget import count_eviction, evict_chunk, evict_over_budget
from agent.readings import INSERT
from agent.store.batch import RECENT_DIGESTS, Batch
from agent.store.core import _SAVE_ELAPSED_COMMIT_S, StoreCore
from agent.store.errors import StorageUnavailable, _room_may_help, _storage_problem
from agent.store.figures import _count
from agent.store.schema import JOIN_WAITING

log = logging.getLogger(__name__)

_DISK_ROOM_BYTES = 4 * 1024 * 1024  # more free than this: a full database is the hard cap


class CommitMixin(StoreCore):
    """The pipeline's side: a batch is committed whole, or not at all and then not acknowledged."""

    _last_digest_id: int  # the id of the last digest recorded in `ingested`

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
                "episode, seen_at, stream) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [s.row() for s in batch.states],
            )
            if batch.joins:
                c.execute(JOIN_WAITING)
                c.executemany(
                    "DELETE FROM join_waiting WHERE asset = ?",
                    [(a,) for a, waiting in batch.joins if waiting is None],
                )
                c.executemany(
                    "INSERT OR REPLACE INTO join_waiting (asset, waiting) VALUES (?, ?)",
                    [(a, waiting) for a, waiting in batch.joins if waiting is not None],
                )
            self._record_digests(c, batch.digests)
            if elapsed - self._elapsed_saved >= _SAVE_ELAPSED_COMMIT_S:
                self._save_elapsed(c, elapsed)
        return max(added, 0)

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
