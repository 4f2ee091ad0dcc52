"""The buffer's figures as a status or a scrape reads them (`figures`, kept) and as inspection
does (`stats`, counted from the tables)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from agent.budget import used_bytes
from agent.store.core import StoreCore
from agent.store.figures import _count
from agent.store.incidents import _INCIDENTS


class InspectionMixin(StoreCore):
    """Figures for a status (kept, no scan) and stats for inspection (counted)."""

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
        """Everything, counted from the tables: for inspection (`buffer stats`, doctor).

        The counts are read in one transaction: each statement on its own saw the tables as
        they were when it ran, so `buffer stats` beside a running agent could count a batch's
        dead letters in `dead_letters` but not yet in `dead_letters_by_reason`."""
        with self._lock:
            q = self.conn.execute
            own = not self.conn.in_transaction
            if own:
                q("BEGIN")  # one snapshot for every count below
            try:
                dead_by_reason = dict(
                    q("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
                )
                meta = dict(q("SELECT key, value FROM meta"))
                counts = asdict(_count(self.conn))  # the same count the figures start from
                used = used_bytes(self.conn)
            finally:
                if own:
                    q("COMMIT")
            return {
                **counts,
                "dead_letters_by_reason": dead_by_reason,
                "database_bytes": _file_bytes(self.path) + _wal_bytes(self.path),
                "used_bytes": used,
                "budget_bytes": self.budget.max_bytes,
                "hard_cap_bytes": self.budget.hard_cap_bytes,
                "moved_aside": json.loads(meta.get("moved_aside", "[]")),
                "storage_incidents": json.loads(meta.get(_INCIDENTS, "[]")),
            }


def _file_bytes(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0
