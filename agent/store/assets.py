"""Each asset's committed scoring state (window and episode): restored at start, pruned to what
the agent may hold, forgotten when idle or reset by an operator."""

from __future__ import annotations

import logging

from agent.store.batch import AssetState
from agent.store.core import StoreCore
from agent.window import WindowState

log = logging.getLogger(__name__)


class AssetStateMixin(StoreCore):
    """Scoring state committed with each batch, so that a restart scores on where it stopped."""

    def load_states(
        self,
        model_sha256: str,
        limit: int = -1,
        seen_after: float = float("-inf"),
        stream_key: str = "",
    ) -> list[AssetState]:
        """The committed scoring state, if it was written by this same model; else none. At
        most `limit` assets (-1: all), those the gateway heard from last first, and none not
        heard from since `seen_after`: a restart restores no more than the agent may hold.

        The streaming layer's states are kept only if they were written under the same
        `stream_key` (the graph and the layer's parameters, see `agent.pipeline.stream_key`):
        a model with the same graph but other stream parameters keeps its windows and
        episodes, and each asset's layer starts anew."""
        saved = self.get_meta("state_model")
        if saved is not None and saved != model_sha256:
            log.warning(
                "model changed since the last run; windows, streams and episodes start afresh"
            )
            with self._lock, self.conn:
                self.conn.execute("BEGIN")
                self.conn.execute("DELETE FROM asset_state")
        if saved != model_sha256:
            self.set_meta("state_model", model_sha256)
        self._check_stream_key(stream_key)
        rows = self._q(
            "SELECT asset, window_rows, window_n, last_ts, episode, seen_at, stream FROM "
            "asset_state WHERE seen_at >= ? ORDER BY seen_at DESC, last_ts DESC LIMIT ?",
            (seen_after, limit),
        )
        return [
            AssetState(a, WindowState(rows_, n, ts, seen), ep, stream)
            for a, rows_, n, ts, ep, seen, stream in rows
        ]

    def _check_stream_key(self, stream_key: str) -> None:
        """Drop the streaming layer's states saved under another key (or under none: a
        database salvaged without its key); windows and episodes stay."""
        saved = self.get_meta("state_stream")
        if saved == stream_key:
            return
        with self._lock, self.conn:
            self.conn.execute("BEGIN")
            dropped = self.conn.execute(
                "UPDATE asset_state SET stream = NULL WHERE stream IS NOT NULL"
            ).rowcount
            self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('state_stream', ?)",
                (stream_key,),
            )
        if dropped:
            log.warning(
                "the model's streaming layer changed since the last run; it starts afresh "
                "for %d assets (windows and episodes carry on)",
                dropped,
            )

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
        joins = self._has_joins()
        with self._storage_errors("forgetting assets"), self._lock, self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("DELETE FROM asset_state WHERE asset = ?", names)
            self.conn.executemany("DELETE FROM asset_resets WHERE asset = ?", names)
            if joins:
                self.conn.executemany("DELETE FROM join_waiting WHERE asset = ?", names)

    def load_joins(self) -> list[tuple[str, str]]:
        """The readings waiting to be joined, per asset, as committed (agent.sources.join)."""
        if not self._has_joins():
            return []
        rows = self._q("SELECT asset, waiting FROM join_waiting ORDER BY asset")
        return [(asset, waiting) for asset, waiting in rows]

    def _has_joins(self) -> bool:
        """Whether the table exists (made by the first batch that needed it)."""
        return bool(self._q("SELECT 1 FROM sqlite_master WHERE name = 'join_waiting'"))

    def reset_requests(self) -> list[str]:
        """Assets an operator reset (`edge-agent reset-asset`) since the agent last looked."""
        return [asset for (asset,) in self._q("SELECT asset FROM asset_resets")]
