"""Window stage: per-asset rolling windows of the last W readings, in arrival order.

Each asset keeps a [2W, n] buffer and writes forward; when it is full the newest W - 1 rows move
to the front, so every window is a contiguous slice and copying one costs a single memcpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _AssetBuffer:
    rows: np.ndarray
    filled: int = 0
    last_ts: float = float("-inf")


@dataclass
class Windows:
    window: int
    n_sensors: int
    _assets: dict[str, _AssetBuffer] = field(default_factory=dict)

    def order_problem(self, asset: str, ts: float) -> str | None:
        """Why a reading at `ts` cannot join the asset's window now, or None if it can."""
        buf = self._assets.get(asset)
        if buf is None or ts > buf.last_ts:
            return None
        return "duplicate_ts" if ts == buf.last_ts else "out_of_order"

    def push(self, asset: str, ts: float, values: np.ndarray) -> np.ndarray | None:
        """Add a reading; return the full window ending at it (a view), or None while filling."""
        buf = self._assets.get(asset)
        if buf is None:
            buf = self._assets[asset] = _AssetBuffer(
                rows=np.empty((2 * self.window, self.n_sensors), dtype=np.float32)
            )
        if buf.filled == len(buf.rows):
            keep = self.window - 1
            buf.rows[:keep] = buf.rows[buf.filled - keep : buf.filled]
            buf.filled = keep
        buf.rows[buf.filled] = values
        buf.filled += 1
        buf.last_ts = ts
        if buf.filled < self.window:
            return None
        return buf.rows[buf.filled - self.window : buf.filled]
