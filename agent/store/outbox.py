"""The forwarder's side of the store: the outbox of alerts, read in order, marked delivered,
expired by elapsed time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.store.core import StoreCore


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    topic: str
    payload: bytes
    created_elapsed: float  # the store's elapsed time when it was created (see agent.elapsed)


class OutboxMixin(StoreCore):
    """The forwarder's side: alerts in order, each delivered at least once or expired."""

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
            with self._figures_lock:
                self._figures.alerts_pending -= n
                self._figures.alerts_expired += n
        return n
