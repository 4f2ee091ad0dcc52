"""Every registered detector through the same checks: export, parity, quality, agent round trip."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from agent.model.score import Scorer
from agent.model.squash import logit_of_score
from agent.model.table import read_table
from trainer.calibration import Calibration
from trainer.detectors import DETECTORS, default_settings, make_detector
from trainer.detectors.autoencoder import AutoencoderDetector
from trainer.detectors.base import attribution, is_sequence
from trainer.detectors.isolation_forest import average_path_length
from trainer.features import sliding_windows
from trainer.metrics import roc_auc
from trainer.train import PARITY_TOLERANCE, TrainOptions, train, write_model


@pytest.mark.parametrize("algorithm", sorted(DETECTORS))
def test_detector_exports_a_faithful_useful_model(algorithm, sim_data, tmp_path: Path):
    result = train(sim_data.train_csv, TrainOptions(algorithm=algorithm, model_id=algorithm))
    model = write_model(result, tmp_path / f"{algorithm}.onnx")
    manifest = result.manifest
    assert manifest.algorithm.name == algorithm
    assert manifest.parity.max_abs_error <= PARITY_TOLERANCE
    flagged = manifest.training.metrics["train_flagged_fraction"]
    if default_settings(algorithm).threshold_factor == 1.0:
        assert abs(flagged - 0.01) < 0.005  # the contamination's share of training windows
    else:  # a threshold further out flags fewer
        assert flagged < 0.01

    scorer = Scorer.load(model)  # the agent's loader: hash, signature and manifest checks
    table = read_table(sim_data.live_csv)
    windows = sliding_windows(table.matrix(manifest.sensor_names), manifest.window)
    got = scorer.score(windows)
    want_score, want_contrib = result.pipeline.reference(windows)
    np.testing.assert_allclose(got.score, want_score, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(got.contributions, want_contrib, atol=PARITY_TOLERANCE)
    assert ((got.score >= 0) & (got.score <= 1)).all()
    np.testing.assert_allclose(got.contributions.sum(axis=1), 1.0, atol=1e-4)

    labels = table.labels("anomaly")[manifest.window - 1 :]
    assert roc_auc(labels, got.score) > 0.6, "better than chance on labelled faults"


def test_export_refuses_a_graph_that_drifts_from_the_reference(sim_data, monkeypatch):
    import trainer.train as train_module
    from trainer.train import ExportError

    monkeypatch.setattr(train_module, "PARITY_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match="refusing to export"):
        train(sim_data.train_csv, TrainOptions())


def test_agent_rejects_a_model_whose_graph_was_altered(model_path: Path, tmp_path: Path):
    import onnx
    from onnx import numpy_helper

    from agent.model.manifest import ModelFileError

    model = onnx.load(model_path)
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 1, weight.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)  # still a loadable graph, with the original manifest
    with pytest.raises(ModelFileError, match="altered after export"):
        Scorer.load(tampered)


def test_training_is_reproducible(sim_data):
    first = train(sim_data.train_csv, TrainOptions(seed=9))
    second = train(sim_data.train_csv, TrainOptions(seed=9))
    assert first.manifest.graph_sha256 == second.manifest.graph_sha256


@pytest.mark.parametrize("algorithm", sorted(DETECTORS))
def test_detector_defaults_are_not_shared_between_instances(algorithm, sim_data):
    """Fitting one instance leaves a fresh one as it was (no mutable defaults shared)."""
    fresh = make_detector(algorithm).params()
    fitted = make_detector(algorithm)
    # A sequence detector reads [windows, window, sensors]; the others [windows, features].
    shape = (300, 10, 6) if is_sequence(fitted) else (300, 6)
    features = np.random.default_rng(0).normal(size=shape)
    fitted.fit(features, seed=1)
    assert make_detector(algorithm).params() == fresh
    with pytest.raises(RuntimeError, match="fit the detector first"):
        make_detector(algorithm).reference_scores(features)


@pytest.mark.parametrize("algorithm", ["zscore", "isolation_forest"])
def test_every_feature_exports_faithfully_in_any_order(algorithm, sim_data):
    """Every windowed feature, the optional ones too, named out of the graph's column order
    (linear ones first), has a graph equal to its reference, in float64 and rounded to float32
    for the trees."""
    named = ["max", "rate_of_change", "std", "last", "min", "deviation", "mean"]
    options = TrainOptions(algorithm=algorithm, features=named, window=10, model_id="every")
    result = train(sim_data.train_csv, options)
    assert result.manifest.features == named
    assert result.manifest.parity.max_abs_error <= PARITY_TOLERANCE
    windows = sliding_windows(read_table(sim_data.live_csv).matrix(result.pipeline.sensors), 10)
    scores, _ = result.pipeline.reference(windows)
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("algorithm", sorted(DETECTORS))
def test_contributions_point_at_the_faulty_sensor(algorithm, sim_data):
    """Each injected fault touches one sensor. For every fault the model detects (flags at
    least a quarter of its windows), that sensor is the one its contributions name first most
    often. (A fault flagged in one window or two says nothing about the attribution.)"""
    result = train(sim_data.train_csv, TrainOptions(algorithm=algorithm, model_id=algorithm))
    names = result.manifest.sensor_names
    window = result.manifest.window
    values = read_table(sim_data.live_csv).matrix(names)
    score, contributions = result.pipeline.reference(sliding_windows(values, window))
    named = {}
    for fault in sim_data.faults:
        rows = np.arange(max(fault.start, window - 1), fault.end) - (window - 1)
        flagged = rows[score[rows] >= 0.5]
        if len(flagged) >= max(1, len(rows) / 4):
            top = np.bincount(contributions[flagged].argmax(axis=1), minlength=len(names))
            named[fault.label] = names[int(top.argmax())] == fault.sensor
    assert named and all(named.values()), named


@pytest.mark.parametrize("algorithm", ["pca", "autoencoder", "lstm_autoencoder"])
def test_sum_detectors_split_their_raw_score_exactly_over_the_features(algorithm, sim_data):
    result = train(sim_data.train_csv, TrainOptions(algorithm=algorithm, model_id=algorithm))
    pipeline = result.pipeline
    table = read_table(sim_data.live_csv)
    windows = sliding_windows(table.matrix(result.manifest.sensor_names), pipeline.window)
    scaled = pipeline.scaled(windows)
    per_feature = attribution(pipeline.detector, scaled)
    assert (per_feature >= 0).all()
    np.testing.assert_allclose(
        per_feature.sum(axis=1), pipeline.detector.reference_scores(scaled), rtol=1e-9
    )


def test_the_threshold_factor_moves_the_threshold_away_from_the_median():
    raw = np.random.default_rng(4).gamma(2.0, 1.0, 5000)
    plain, far = Calibration.fit(raw, 0.01), Calibration.fit(raw, 0.01, factor=3.0)
    median, q = np.median(raw), np.quantile(raw, 0.99)
    assert plain.threshold == pytest.approx(q)
    assert far.threshold == pytest.approx(median + 3 * (q - median))
    # Either way the median maps to 0.1 and the threshold to 0.5 (the alert threshold).
    for cal in (plain, far):
        assert cal.apply(np.array([median, cal.threshold])) == pytest.approx([0.1, 0.5])
    assert (
        (far.apply(raw) >= 0.5).mean()
        < (plain.apply(raw) >= 0.5).mean()
        == pytest.approx(0.01, abs=1e-3)
    )


def test_isolation_forest_credits_match_the_paths_scikit_learn_reports(sim_data):
    """DIFFI credits checked against an independent walk: scikit-learn's decision_path."""
    result = train(sim_data.train_csv, TrainOptions(algorithm="isolation_forest"))
    pipeline = result.pipeline
    table = read_table(sim_data.live_csv)
    windows = sliding_windows(table.matrix(result.manifest.sensor_names), pipeline.window)[::7]
    scaled = pipeline.scaled(windows)
    forest = pipeline.detector._fitted()
    want = np.zeros(scaled.shape)
    for estimator, feature_map in zip(forest.estimators_, forest.estimators_features_, strict=True):
        tree = estimator.tree_
        x = scaled[:, feature_map]
        paths = estimator.decision_path(x).toarray().astype(bool)
        leaves = estimator.apply(x)
        depth = paths.sum(axis=1) - 1 + average_path_length(tree.n_node_samples[leaves])
        for i in range(len(x)):
            for node in np.flatnonzero(paths[i]):
                if tree.children_left[node] != -1:
                    want[i, feature_map[tree.feature[node]]] += 1.0 / depth[i]
    want /= len(forest.estimators_)
    np.testing.assert_allclose(attribution(pipeline.detector, scaled), want, rtol=1e-12)


def test_ensembles_of_any_members_export_faithfully(sim_data):
    options = TrainOptions(
        algorithm="ensemble_vote", members=["isolation_forest", "autoencoder", "zscore"]
    )
    result = train(sim_data.train_csv, options)
    assert result.manifest.parity.max_abs_error <= PARITY_TOLERANCE
    table = read_table(sim_data.live_csv)
    windows = sliding_windows(table.matrix(result.manifest.sensor_names), result.manifest.window)
    got = Scorer.from_bytes(result.model_bytes, Path("<test>")).score(windows)
    want_score, want_contrib = result.pipeline.reference(windows)
    np.testing.assert_allclose(got.score, want_score, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(got.contributions, want_contrib, atol=PARITY_TOLERANCE)


def test_an_autoencoder_stopped_early_says_so_in_its_parameters_not_as_a_warning(caplog):
    """Issue 17, item 8: stopping at max_iter is logged at info and kept in the manifest."""
    features = np.random.default_rng(0).normal(size=(200, 6))
    detector = AutoencoderDetector(max_iter=2)
    with caplog.at_level(logging.INFO, logger="trainer.detectors.autoencoder"):
        detector.fit(features, seed=1)
    assert detector.params()["converged"] is False
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_an_autoencoder_passes_on_other_fit_warnings_and_raises_none_of_its_own():
    """The ConvergenceWarning is turned into a log line; nothing else may be swallowed, and a
    single feature must not make scikit-learn warn about the target's shape."""
    one_feature = np.random.default_rng(0).normal(size=(200, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoencoderDetector(max_iter=2).fit(one_feature, seed=1)

    def warns(self, x, y):
        warnings.warn("a real problem", UserWarning, stacklevel=2)
        return self

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sklearn.neural_network.MLPRegressor.fit", warns)
        with pytest.warns(UserWarning, match="a real problem"):
            AutoencoderDetector().fit(one_feature, seed=1)


# The streaming cases (#15): the graph's score through the agent's stream layer with the
# trainer's default settings, read as the agent's alert episodes read it (trainer/stream_checks).
STREAMED = ["zscore", "online", "pca"]


@pytest.fixture(scope="module")
def made():
    from trainer import stream_checks

    results = {a: stream_checks.trained(a) for a in STREAMED}
    return {a: (r, stream_checks.cases(r)) for a, r in results.items()}


@pytest.mark.parametrize("algorithm", STREAMED)
def test_a_persisting_level_shift_fires_one_episode_and_goes_quiet(algorithm, made):
    from trainer.stream_checks import SHIFT_AT, read

    result, cases = made[algorithm]
    got = read(result, cases["shift"])
    onset = SHIFT_AT - (result.manifest.window - 1)  # the first window with a shifted reading
    fires = np.flatnonzero(got.fires)
    assert len(fires) == 1 and onset <= fires[0] < onset + result.manifest.window + 10, fires
    assert not got.open[-1000:].any(), "quiet once the baseline has re-learnt"
    graph_only = episodes_of(cases["shift"].raw)
    assert graph_only.open[-1000:].all(), "premise: the graph alone alerts for ever"


@pytest.mark.parametrize("algorithm", STREAMED)
def test_a_slow_drift_does_not_flood(algorithm, made):
    from trainer.stream_checks import MAX_DRIFT_OPEN, read

    result, cases = made[algorithm]
    assert read(result, cases["drift"]).open.mean() < MAX_DRIFT_OPEN
    assert episodes_of(cases["drift"].raw).open.mean() > 0.2, "premise: the graph alone floods"


@pytest.mark.parametrize("algorithm", STREAMED)
def test_a_normal_series_stays_quiet(algorithm, made):
    from trainer.stream_checks import read

    result, cases = made[algorithm]
    assert not read(result, cases["normal"]).fires.any()


@pytest.mark.parametrize("algorithm", STREAMED)
def test_a_fault_that_ended_does_not_blind_the_asset_to_the_next(algorithm, made):
    """A first fault that saturated for a week lifted the tail gate to its cap; a second,
    smaller one four weeks after the first ended went unseen (for 26,000 readings with the
    `online` detector). Now it fires about when it does with no first fault."""
    from trainer.stream_checks import SECOND_SLACK, second_fault

    result, cases = made[algorithm]
    alone = second_fault(result, cases["second"])
    assert alone is not None, "premise: the second fault fires on its own"
    after = second_fault(result, cases["after"])
    assert after is not None and after <= alone + SECOND_SLACK, (alone, after)


def episodes_of(scores: np.ndarray):
    from trainer.readout import episodes

    return episodes(scores, 0.5)


@pytest.mark.parametrize("algorithm", ["zscore", "online"])
def test_a_constant_series_trains_and_its_stream_scores(algorithm):
    from agent.model.stream import Stream
    from trainer.train import train_values

    flat = np.full((2000, 1), 3.0)
    result = train_values(flat, ["v"], TrainOptions(algorithm=algorithm), "flat")
    m = result.manifest
    scorer = Scorer.from_bytes(result.model_bytes, Path("flat"))
    live = flat.copy()
    live[1500:] = 4.0  # leaving the stuck value is the anomaly
    windows = sliding_windows(live.astype(np.float32), m.window)
    stream = Stream(m.stream, m.window, 1)
    out = stream.step(stream.new_state(), scorer.score_many(windows).score, windows)
    assert not (out[:1400] >= 0.5).any() and (out[1500 - m.window + 1 :] >= 0.5).any()


def test_the_online_stream_starts_from_the_graph_it_was_trained_with(sim_data):
    """Before it has learnt anything, the online model scores each window as its graph does."""
    from agent.model.stream import Stream

    result = train(sim_data.train_csv, TrainOptions(algorithm="online"))
    m = result.manifest
    assert m.stream.method == "online"
    windows = sliding_windows(read_table(sim_data.live_csv).matrix(m.sensor_names), m.window)
    graph = Scorer.from_bytes(result.model_bytes, Path("x")).score(windows).score.astype(float)
    frozen = m.stream.online.model_copy(update={"learning_rate": 0.0})
    stream = Stream(m.stream.model_copy(update={"online": frozen}), m.window, len(m.sensors))
    feats, state = stream.model.prepare(windows), stream.model.new_state().tolist()
    logits = np.array([stream.model.step(state, f, 1.0) for f in feats])
    # the graph's calibrated logit: the score is a sigmoid only up to 0.9 (agent.model.squash)
    want = np.array([logit_of_score(g) if 0.0 < g < 1.0 else np.nan for g in graph])
    inside = (graph > 1e-4) & (np.abs(want) < 15.9)  # away from float32's and the layer's clip
    assert (graph[inside] > 0.9).any(), "the tail is exercised"
    np.testing.assert_allclose(logits[inside], want[inside], atol=1e-2)
    assert len(m.model_dump_json()) < 20_000, "the manifest stays small"


def test_the_online_detector_on_other_features_streams_over_its_graph_alone(sim_data):
    """Its gateway model recomputes mean and std only; on other features the manifest must not
    carry a model the agent would feed the wrong numbers."""
    options = TrainOptions(algorithm="online", features=["last", "deviation"], window=5)
    stream = train(sim_data.train_csv, options).manifest.stream
    assert stream.method == "likelihood" and stream.online is None
