"""The LSTM sequence autoencoder: its gradients, what it learns, and its ONNX form."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from agent.model.score import Scorer
from tests.conftest import run_cli
from trainer import AnomalyDetector
from trainer.detectors import make_detector
from trainer.features import sliding_windows
from trainer.lstm import SequenceAutoencoder, Training, train
from trainer.train import PARITY_TOLERANCE, TrainOptions, train_values


def test_backpropagation_through_time_matches_finite_differences():
    rng = np.random.default_rng(3)
    net = SequenceAutoencoder.init(inputs=3, hidden=4, rng=rng)
    windows = rng.normal(size=(5, 6, 3))
    _, grads = net.loss_and_gradients(windows)
    for param, grad in zip(net.arrays(), grads, strict=True):
        flat, gflat = param.reshape(-1), grad.reshape(-1)
        for k in rng.choice(flat.size, min(6, flat.size), replace=False):
            saved = flat[k]
            flat[k] = saved + 1e-6
            up, _ = net.loss_and_gradients(windows)
            flat[k] = saved - 1e-6
            down, _ = net.loss_and_gradients(windows)
            flat[k] = saved
            assert gflat[k] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-9)


def test_training_lowers_the_reconstruction_error():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    series = np.c_[np.sin(t / 8), np.cos(t / 8)]
    windows = np.lib.stride_tricks.sliding_window_view(series, 12, axis=0).transpose(0, 2, 1)
    net = SequenceAutoencoder.init(inputs=2, hidden=4, rng=rng)
    losses = train(net, np.ascontiguousarray(windows), Training(epochs=15), rng)
    assert losses[-1] < 0.2 * losses[0]


def _coupled(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Two sensors where b follows a two readings late: only the order over time tells a
    broken coupling from normal values."""
    a = np.sin(np.arange(rows + 2) / 6) + rng.normal(0, 0.05, rows + 2)
    return np.c_[a[2:], a[:-2]]


def test_it_finds_a_broken_time_coupling_that_each_reading_alone_hides():
    rng = np.random.default_rng(1)
    train_rows = _coupled(1500, rng)
    test_rows = _coupled(400, rng)
    test_rows[200:240, 1] = test_rows[200:240, 0]  # b stops lagging: values stay in range
    detector = AnomalyDetector(algorithm="lstm_autoencoder", contamination=0.01, window=10)
    score = detector.fit(train_rows).score(test_rows)
    assert detector.manifest.parity.max_abs_error <= detector.manifest.parity.tolerance
    assert score[205:240].mean() > 0.5 > np.median(score[20:190])
    assert detector.model.hidden == 4 and detector.model.epochs == 30


def test_the_graph_uses_onnx_lstm_nodes_in_float32():
    rng = np.random.default_rng(2)
    detector = AnomalyDetector(algorithm="lstm_autoencoder", window=8).fit(_coupled(300, rng))
    graph = onnx.load_from_string(detector._model).graph
    lstm = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstm) == 2  # encoder and decoder
    assert detector.manifest.features == ["sequence"]


def test_the_export_folds_scaling_and_calibration_into_the_network_and_keeps_the_scores():
    """ONNX Runtime charges per node (issue 15: 20 µs per window, timed by the bench, never
    here): the scaler, the dense layer's offset, the calibration and the contributions' floor
    ride on the network's constants, and the graph still gives the reference's scores and
    contributions, in a batch and one window at a time (the live path), for readings far from
    0 on unequal scales and for windows far from normal."""
    rng = np.random.default_rng(5)
    rows = _coupled(600, rng) * [3.0, 0.01] + [1000.0, -50.0]
    result = train_values(
        rows, ["a", "b"], TrainOptions(algorithm="lstm_autoencoder", window=8), "test"
    )
    ops = [n.op_type for n in onnx.load_from_string(result.model_bytes).graph.node]
    assert len(ops) == 26 and ops.count("Pad") == 1 and "Div" not in ops, ops

    windows = sliding_windows(rows, 8)
    far = windows[-40:].copy()
    far[:20, -1, 1] += np.geomspace(0.01, 1e4, 20)  # b leaves its range, up to 1e6 of its scale
    far[20:, :, 0] = far[20:, ::-1, 0]  # a runs backwards: in range, out of order
    windows = np.concatenate([windows, far])
    scorer = Scorer.from_bytes(result.model_bytes, Path("<test>"))
    batch = scorer.score_many(windows)
    one_at_a_time = [scorer.score(w[None]) for w in windows]
    want_score, want_contrib = result.pipeline.reference(windows)
    for score, contributions in [
        (batch.score, batch.contributions),
        (
            np.concatenate([o.score for o in one_at_a_time]),
            np.concatenate([o.contributions for o in one_at_a_time]),
        ),
    ]:
        np.testing.assert_allclose(score, want_score, atol=PARITY_TOLERANCE)
        np.testing.assert_allclose(contributions, want_contrib, atol=PARITY_TOLERANCE)
    assert (want_score[-40:-20] >= want_score[-40]).all() and want_score[-21] > 0.9


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_reading_past_float32_s_range_is_still_seen_through_the_stream_layer():
    """1e300 is infinite in a float32 window (as on the gateway). The graph folds the scaling
    into a `MatMul` whose zeros make inf · 0 = NaN: its score is NaN, as every feature
    detector's already was (`edge-agent score` prints nan; the previous LSTM graph gave 1 with
    a NaN contribution). The stream layer, which decides the alerts, scores those rows high."""
    rng = np.random.default_rng(1)
    t = np.arange(1600)
    rows = np.c_[np.sin(t / 6), np.cos(t / 6)] + rng.normal(0, 0.05, (1600, 2))
    detector = AnomalyDetector(algorithm="lstm_autoencoder", window=10).fit(rows[:1000])
    test = rows[1000:].copy()
    test[300, 1] = 1e300
    graph = detector.score(test)
    assert np.isnan(graph[300:310]).all() and np.isfinite(np.delete(graph, range(300, 310))).all()
    stream = detector.stream_scores(test)
    assert np.isfinite(stream).all() and (stream[300:310] >= 0.9).all()
    assert np.median(stream[20:290]) < 0.5


def test_a_window_of_one_row_is_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"window=10"):
        AnomalyDetector(algorithm="lstm_autoencoder").fit(np.zeros((100, 2)))


def test_it_cannot_join_an_ensemble_of_feature_detectors():
    with pytest.raises(ValueError, match="choose two or more of"):
        make_detector("ensemble", members=["pca", "lstm_autoencoder"])


def test_its_options_are_checked_by_name():
    with pytest.raises(ValueError, match=r"no option\(s\) \['layers'\]; its options are"):
        make_detector("lstm_autoencoder", params={"layers": 2})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--algorithm", "lstm_autoencoder", "--features", "last"],
            "its features are \\['sequence'\\]",
        ),
        (
            ["--algorithm", "pca", "--features", "sequence"],
            "not the 'sequence' of a sequence model",
        ),
        (["--algorithm", "lstm_autoencoder", "--window", "1"], "windows of 2 or more readings"),
    ],
)
def test_the_command_line_names_a_sequence_mismatch(sim_data, tmp_path, args, message):
    done = run_cli(
        "trainer", "train", str(sim_data.train_csv), *args, "--out", str(tmp_path / "m.onnx")
    )
    assert done.returncode == 2
    assert re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "m.onnx").exists()
