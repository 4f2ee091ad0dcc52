"""The window stage: adding a block of rows gives exactly the windows adding them one by one
does, and leaves the same state behind."""

from __future__ import annotations

import numpy as np
import pytest

from agent.window import Windows


@pytest.mark.parametrize("window", [1, 3, 10])
def test_extending_by_blocks_equals_extending_row_by_row(window):
    rng = np.random.default_rng(window)
    one, block = Windows(window, 4), Windows(window, 4)
    by_row, by_block, every_row = [], [], []
    ts = 0
    for size in (1, 2, 7, 1, 25, 3):
        rows = rng.random((size, 4))
        stamps = np.arange(ts + 1, ts + size + 1, dtype=np.float64)
        ts += size
        every_row += list(rows.astype(np.float32))
        for t, row in zip(stamps, rows, strict=True):
            w, before = one.extend("pump", np.array([t]), row[np.newaxis], seen_at=float(ts))
            by_row.append(None if before else w[0].copy())
        windows, first = block.extend("pump", stamps, rows, seen_at=float(ts))
        assert len(windows) == size - first
        by_block += [None] * first + [w.copy() for w in windows]
        assert one.snapshot("pump").rows == block.snapshot("pump").rows
        assert one.last_ts("pump") == block.last_ts("pump")
    assert len(by_row) == len(by_block)
    for i, (a, b) in enumerate(zip(by_row, by_block, strict=True)):
        assert (a is None and b is None) or np.array_equal(a, b)
        if b is not None:  # the window ending at row i: its last W rows, oldest first
            assert np.array_equal(b, np.stack(every_row[i + 1 - window : i + 1]))


def test_an_asset_silent_since_before_a_time_is_idle_and_can_be_forgotten():
    windows = Windows(3, 2)
    windows.extend("old", np.array([1.0]), np.ones((1, 2)), seen_at=100.0)
    windows.extend("new", np.array([1.0]), np.ones((1, 2)), seen_at=200.0)
    assert windows.idle(seen_before=150.0) == ["old"]
    assert windows.snapshot("new").seen_at == 200.0
    windows.forget("old")
    assert "old" not in windows and len(windows) == 1
    assert windows.last_ts("old") == float("-inf"), "a forgotten asset takes any time"
