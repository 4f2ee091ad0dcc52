"""What every part of `Store` shares: the connection and its lock, the kept figures, the
problems a status reports, the elapsed-time clock, and the `meta` table."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.budget import Budget
from agent.elapsed import Elapsed
from agent.store.errors import StorageUnavailable, _storage_problem
from agent.store.figures import Figures

# Elapsed time is saved with a commit at most every _SAVE_ELAPSED_COMMIT_S (a crash forgets no
# more than that; saving it with every one-reading batch would write one more page each), and
# by an idle agent every _SAVE_ELAPSED_IDLE_S (SD card wear).
_SAVE_ELAPSED_COMMIT_S = 1.0
_SAVE_ELAPSED_IDLE_S = 60.0


class StoreCore:
    """The state the mixins of `Store` (agent.store.database) work on; `Store.__init__` sets it."""

    path: Path
    budget: Budget
    _conn: sqlite3.Connection
    _lock: threading.Lock  # the connection's: one statement or transaction at a time
    _figures_lock: threading.Lock  # the figures', so that a status never waits for a commit
    _figures: Figures
    _problems: dict[str, str]  # what failed, by kind of write, until it succeeds
    _elapsed: Elapsed
    _elapsed_saved: float

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def _q(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def _save_elapsed(self, c: sqlite3.Connection, elapsed: float) -> None:
        """In the caller's transaction: one row (see agent.elapsed)."""
        c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('elapsed_s', ?)", (f"{elapsed:.3f}",)
        )
        self._elapsed_saved = elapsed

    def elapsed(self) -> float:
        """Seconds of agent running time this database has seen (see agent.elapsed)."""
        return self._elapsed.now()

    def keep_elapsed(self) -> None:
        """Save the elapsed time when no commit has for `_SAVE_ELAPSED_IDLE_S` (an idle agent);
        called often, it writes at most that often. Raises StorageUnavailable as a commit."""
        elapsed = self._elapsed.now()
        if elapsed - self._elapsed_saved < _SAVE_ELAPSED_IDLE_S:
            return
        with self._storage_errors("saving the elapsed time"), self._lock, self.conn:
            self.conn.execute("BEGIN")
            self._save_elapsed(self.conn, elapsed)

    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )

    def _append_meta_list(self, key: str, item: str) -> None:
        self.set_meta(key, json.dumps([*json.loads(self.get_meta(key) or "[]"), item]))

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
