"""The `Store`: opening the database (pragmas, schema, recovery from damage found at open) and
closing it; its jobs are the mixins it is made of."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from agent.budget import Budget
from agent.elapsed import Elapsed
from agent.salvage import salvage, wal_damage
from agent.store.assets import AssetStateMixin
from agent.store.commit import CommitMixin
from agent.store.errors import CorruptDatabase, StorageUnavailable, _is_corrupt
from agent.store.figures import _count
from agent.store.incidents import (
    _INCIDENT_COUNTS,
    _INCIDENTS,
    IncidentMixin,
    _keep_wal,
    _move_aside,
)
from agent.store.inspection import InspectionMixin
from agent.store.outbox import OutboxMixin
from agent.store.schema import _create

log = logging.getLogger(__name__)

DB_NAME = "agent.db"
# The WAL is checkpointed into the database at this many pages (SQLite's default is 1000, 4 MiB)
# and cut back to this size after: on a small or nearly full disk the WAL must not be what takes
# the last free space, since copying it back needs room in the database file too.
_WAL_CHECKPOINT_PAGES = 256
_WAL_KEEP_BYTES = 1024 * 1024
# SQLite's page cache per connection (its default is 2,000 KiB). Writes go to the right edge of
# each index and eviction to the left, so a small cache serves; measured, 2,000 -> 512 KiB saved
# about 1.5 MiB of the agent's peak memory and no drain rate.
_PAGE_CACHE_KIB = 512


class Store(CommitMixin, OutboxMixin, AssetStateMixin, InspectionMixin, IncidentMixin):
    """The agent's buffer in one SQLite file; each job is a mixin of its own module (see the
    package docstring), all sharing `StoreCore`."""

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
