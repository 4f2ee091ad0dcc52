"""The LSTM sequence autoencoder: its gradients, what it learns, and its ONNX form."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from tests.conftest import run_cli
from trainer import AnomalyDetector
from trainer.detectors import make_detector
from trainer.lstm import SequenceAutoencoder, Training, train


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
