"""Window stage: per-asset rolling windows of the last W readings, in arrival order.

Each asset keeps a [2W, n] buffer and writes forward; when it is full the newest W - 1 rows move
to the front, so every window is a contiguous slice and copying one costs a single memcpy.
`snapshot`/`restore` carry an asset's last W - 1 rows and time across a restart (the store keeps
them in the same transaction as the readings), so the next reading completes the same window it
would have completed had the agent never stopped. Each asset also remembers when the gateway last
received a reading for it, so that the runtime can forget assets gone silent (#13).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _AssetBuffer:
    rows: np.ndarray
    filled: int = 0
    last_ts: float = float("-inf")
    seen_at: float = 0.0  # the store's elapsed running time at its last reading


@dataclass(frozen=True)
class WindowState:
    """What an asset's window needs to resume: its newest rows (float32 bytes), last reading
    time, and when the gateway received that reading."""

    rows: bytes
    n_rows: int
    last_ts: float
    seen_at: float = 0.0


@dataclass
class Windows:
    window: int
    n_sensors: int
    _assets: dict[str, _AssetBuffer] = field(default_factory=dict)

    def last_ts(self, asset: str) -> float:
        buf = self._assets.get(asset)
        return buf.last_ts if buf is not None else float("-inf")

    def extend(
        self, asset: str, ts: np.ndarray, rows: np.ndarray, seen_at: float
    ) -> tuple[np.ndarray, int]:
        """Add rows (already in time order and after the asset's last reading), received by
        the gateway at `seen_at`, at once.

        Returns the windows the rows complete, [m, W, n], and how many leading rows complete
        none (they fill a new asset's first window); row i has window i - that number.
        """
        buf = self._assets.get(asset)
        if buf is None:
            buf = self._assets[asset] = _AssetBuffer(
                rows=np.empty((2 * self.window, self.n_sensors), dtype=np.float32)
            )
        keep = min(buf.filled, self.window - 1)
        joined = np.concatenate([buf.rows[buf.filled - keep : buf.filled], rows.astype(np.float32)])
        tail = min(len(joined), self.window - 1)
        buf.rows[:tail] = joined[len(joined) - tail :]
        buf.filled, buf.last_ts, buf.seen_at = tail, float(ts[-1]), seen_at
        if len(joined) < self.window:
            return np.empty((0, self.window, self.n_sensors), np.float32), len(rows)
        windows = np.lib.stride_tricks.sliding_window_view(joined, self.window, axis=0)
        # sliding_window_view puts the window axis last: [m, n, W] -> [m, W, n]
        return windows.transpose(0, 2, 1), self.window - 1 - keep

    def snapshot(self, asset: str) -> WindowState:
        buf = self._assets[asset]
        n = min(buf.filled, self.window - 1)
        rows = buf.rows[buf.filled - n : buf.filled].tobytes()
        return WindowState(rows, n, buf.last_ts, buf.seen_at)

    def restore(self, asset: str, state: WindowState) -> None:
        rows = np.empty((2 * self.window, self.n_sensors), dtype=np.float32)
        saved = np.frombuffer(state.rows, dtype=np.float32).reshape(state.n_rows, self.n_sensors)
        rows[: state.n_rows] = saved
        self._assets[asset] = _AssetBuffer(rows, state.n_rows, state.last_ts, state.seen_at)

    def clear(self) -> None:
        self._assets.clear()

    def forget(self, asset: str) -> None:
        """Drop an asset's window: its next reading starts a new one, whatever its time."""
        self._assets.pop(asset, None)

    def rewind_ahead(self, latest: float) -> list[str]:
        """Reset the clock, not the window, of assets whose last reading is after `latest`,
        and name them (`asset@ts`): their next reading is taken whatever its time."""
        ahead = []
        for name, buf in self._assets.items():
            if buf.last_ts > latest:
                ahead.append(f"{name}@{buf.last_ts:.0f}")
                buf.last_ts = float("-inf")
        return ahead

    def idle(self, seen_before: float) -> list[str]:
        """Assets whose last reading the gateway received before `seen_before`."""
        return [name for name, buf in self._assets.items() if buf.seen_at < seen_before]

    def __contains__(self, asset: str) -> bool:
        return asset in self._assets

    def __len__(self) -> int:
        return len(self._assets)

    def assets(self) -> list[str]:
        return list(self._assets)
