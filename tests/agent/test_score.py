"""The scorer's one-window path (issue 15: ≤ 20 µs per window): bound buffers, one RunOptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from agent.model.score import Scorer
from agent.model.table import read_table
from tests.conftest import SimData
from trainer.features import sliding_windows


def _windows(scorer: Scorer, sim_data: SimData, n: int) -> np.ndarray:
    table = read_table(sim_data.live_csv)
    values = table.matrix([s.name for s in scorer.manifest.sensors])
    return sliding_windows(values, scorer.manifest.window)[:n].astype(np.float32)


def test_one_window_at_a_time_scores_as_the_batch_does(model_path: Path, sim_data: SimData):
    scorer = Scorer.load(model_path)
    windows = _windows(scorer, sim_data, 300)
    batch = scorer.score(windows)
    ones = [scorer.score(windows[i : i + 1]) for i in range(len(windows))]
    # Each call's arrays are its own: the bound output buffers are copied, not handed out.
    got_score = np.concatenate([one.score for one in ones])
    got_contributions = np.concatenate([one.contributions for one in ones])
    assert len(np.unique(got_score)) > 100, "premise: the windows score differently"
    np.testing.assert_allclose(got_score, batch.score, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_contributions, batch.contributions, rtol=0, atol=1e-12)


def test_every_one_window_run_reuses_one_run_options(model_path: Path, sim_data: SimData):
    """Given no RunOptions, ONNX Runtime builds a default one per call (about 1 µs of the
    20): the scorer makes one and passes it every time."""
    scorer = Scorer.load(model_path)
    seen: list[object] = []
    run = scorer._one._run

    def recording(bound: object, options: object) -> None:
        seen.append(options)
        run(bound, options)

    scorer._one._run = recording
    for window in _windows(scorer, sim_data, 3):
        scorer.score(window[None])
    assert len(seen) == 3
    assert all(isinstance(options, ort.RunOptions) for options in seen)
    assert all(options is seen[0] for options in seen)
