"""The per-asset stream layer (#15): its math, its determinism and its saved state."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.model.novelty import NoveltyParams
from agent.model.online import OnlineParams
from agent.model.profile import ProfileParams, hour_of
from agent.model.stream import Stream, StreamParams, StreamState, StreamStateError

WINDOW, SENSORS = 5, 2
# Settings of the layer under test, whatever the trainer's defaults are.
LAYER = {"long_window": 500, "short_window": 8, "alert_z": 2.5, "alarm_learning": 0.25}


def _likelihood(**update: object) -> Stream:
    params = StreamParams(
        method="likelihood", baseline_mean=-2.0, baseline_std=0.5, baseline_weight=200, **LAYER
    )
    return Stream(params.model_copy(update=update), WINDOW, SENSORS)


def _online(**update: object) -> Stream:
    online = OnlineParams(
        mean=[0.0, 0.0, 1.0, 1.0], scale=[1.0, 1.0, 0.3, 0.3], threshold=3.0, spread=1.0
    )
    params = StreamParams(
        method="online",
        baseline_mean=-2.0,
        baseline_std=0.5,
        baseline_weight=200,
        online=online,
        **LAYER,
    )
    return Stream(params.model_copy(update=update), WINDOW, SENSORS)


def _novel(**update: object) -> Stream:
    """The online layer with range novelty over readings of about N(0, 1) (training ±2)."""
    novelty = NoveltyParams(tolerance=0.3, memory=20, low=[-2.0, -2.0], high=[2.0, 2.0])
    stream = _online()
    params = stream.params.model_copy(update={"novelty": novelty, **update})
    return Stream(params, WINDOW, SENSORS)


def _profiled(**update: object) -> Stream:
    """The online layer with novelty and the daily profile."""
    profile = ProfileParams(
        mean=[0.0, 0.0],
        spread=[1.0, 1.0],
        median=1.0,
        scale=2.0,
        baseline_mean=-1.5,
        baseline_std=0.5,
        baseline_weight=100,
    )
    params = _novel().params.model_copy(update={"profile": profile, **update})
    return Stream(params, WINDOW, SENSORS)


def _gated(**update: object) -> Stream:
    """The online layer with novelty, the daily profile and the tail gate."""
    return _profiled(tail_quantile=0.99, tail_step=0.05, **update)


def _released(**update: object) -> Stream:
    """The layer with the tail gate that releases an episode once the asset is back."""
    return _gated(tail_climb=30, **update)


MAKERS = [_likelihood, _online, _novel, _profiled, _gated, _released]
MAKER_IDS = ["likelihood", "online", "novelty", "profile", "tail", "release"]
# A reading every 5 minutes from 2024-01-01 UTC: each window's newest reading's time.
TIMES = 1_704_067_200.0 + 300.0 * np.arange(20_000)


def _scores(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _data(n: int, shift_at: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Graph scores and windows [n, WINDOW, SENSORS] of a stream that may shift level."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.0, 0.5, n)
    windows = rng.normal(0.0, 1.0, (n, WINDOW, SENSORS))
    if shift_at is not None:
        logits[shift_at:] += 8.0
        windows[shift_at:] += 6.0
    return _scores(logits), windows


@pytest.mark.parametrize(
    "make", [_likelihood, _online, _gated], ids=["likelihood", "online", "tail"]
)
def test_a_persisting_shift_alerts_at_its_onset_then_the_baseline_relearns(make):
    stream = make()
    raw, windows = _data(12000, shift_at=2000)
    out = stream.step(stream.new_state(), raw, windows)
    above = np.flatnonzero(out >= 0.5)
    assert len(above) and 2000 <= above[0] < 2010, "alerts within a few windows of the onset"
    assert not (out[:2000] >= 0.5).any(), "quiet before"
    assert not (out[-1000:] >= 0.5).any(), "the shift is the new normal by the end"


def test_without_the_layer_the_same_shift_never_goes_quiet():
    """The premise of the test above: the graph's own score stays up for the whole shift."""
    stream = Stream(StreamParams(), WINDOW, SENSORS)
    raw, windows = _data(12000, shift_at=2000)
    out = stream.step(stream.new_state(), raw, windows)
    assert (out[-1000:] >= 0.5).all()
    np.testing.assert_array_equal(out, raw)


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_scores_do_not_depend_on_batches_or_on_a_restart_between_them(make):
    """Crash consistency: a state saved after any batch and loaded into a fresh layer (a
    restarted agent) continues with exactly the scores of an unbroken run."""
    raw, windows = _data(3000, shift_at=1500, seed=3)
    whole = make()
    want = whole.step(whole.new_state(), raw, windows, TIMES[:3000])
    cuts = [0, 1, 7, 500, 1499, 1500, 1503, 2222, 3000]
    got = []
    saved = make().dump(make().new_state())
    for a, b in itertools.pairwise(cuts):
        stream = make()  # a new process: nothing but the saved bytes carries over
        state = stream.load(saved)
        got.append(stream.step(state, raw[a:b], windows[a:b], TIMES[a:b]))
        saved = stream.dump(state)
    np.testing.assert_array_equal(np.concatenate(got), want)


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_the_state_stays_the_same_size_however_long_the_stream(make):
    stream = make()
    state = stream.new_state()
    size = len(stream.dump(state))
    raw, windows = _data(5000, shift_at=100)
    stream.step(state, raw, windows, TIMES[:5000])
    assert len(stream.dump(state)) == size
    assert stream.load(stream.dump(state)).seen == 5000


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_a_saved_state_that_does_not_fit_is_refused_by_name(make):
    stream = make()
    good = np.frombuffer(stream.dump(stream.new_state()), dtype=np.float64).copy()

    def bad(index: int, value: float) -> bytes:
        state = good.copy()
        state[index] = value
        return state.tobytes()

    cases = {
        "bytes, expected": [good.tobytes()[:-8], good.tobytes() + b"\0" * 8, b"", b"xyz"],
        "format": [bad(0, 1.0), bad(0, 99.0)],
        "not finite": [bad(2, np.nan), bad(3, np.inf)],
        "out of range": [bad(1, -1.0), bad(1, 2.5), bad(4, -0.1), bad(5, 1.5)],
        # Finite but past any logit: the baseline at -1e300 kept the asset alerting for about
        # a million windows (its mean creeps back at rate x alarm_learning).
        "past what": [bad(2, 1e300), bad(3, -1e300), bad(4, 1e300)],
    }
    if stream.model is not None and stream.novelty is None and stream.profile is None:
        # 1e30: no step leaves more than 100 training variances (it was the compounding's).
        cases["variance"] = [bad(len(good) - 1, v) for v in (0.0, -3.0, 1e30)]
    core = 5  # a likelihood's; the gate's quantile, and the episode it may release
    if stream.params.tail_quantile > 0:
        core = 9 if stream.params.tail_climb else 6
        cases["format"].append(bad(0, 2.0))  # a state without the gate's quantiles
        cases["format"].append(bad(0, 3.0))  # its quantiles as logits, not distances
        cases["format"].append(bad(0, 9.0 - core))  # with (5) or without (4) the episode
        cases["past what"] += [bad(6, 1e300), bad(len(good) - 1, -1e300)]
        # A gate far below any the layer reaches: released to it, the asset alerted on every
        # burst, as with no gate, for about a million windows.
        cases["tail gate"] = [bad(6, -5e4)]
    if core == 9:
        cases["episode open"] = [bad(7, 0.5), bad(7, -1.0), bad(7, 2.0)]
        cases["past what"] += [bad(8, -1e300), bad(9, 1e300)]
        cases["tail gate"].append(bad(9, -5e4))  # the gate at the onset
    if stream.profile is not None:
        at = len(good) - stream.profile.state_size - core  # counts, means, variances; likelihood
        end = len(good) - core  # the profile's likelihood: seen, means, variance, last
        cases["profile state"] = [bad(at, 0.5), bad(at, -1.0), bad(end - 1, 0.0)]
        cases["profile state out of range"] = [bad(end, -1.0), bad(end + 4, 2.0)]
        cases["profile state past"] = [bad(end + 2, 1e300)]
    elif stream.novelty is not None:
        at = len(good) - stream.novelty.state_size  # held score, age, lows, highs
        cases["novelty state"] = [
            bad(at, 1.5),
            bad(at, -0.1),
            bad(at + 1, 2.5),
            bad(at + 1, -1.0),
            bad(at + 2, 5.0),  # a low above its high
            bad(len(good) - 1, 1e300),
        ]
    for message, payloads in cases.items():
        for payload in payloads:
            with pytest.raises(StreamStateError, match=message):
                stream.load(payload)


def test_a_state_from_the_other_method_is_refused():
    with pytest.raises(StreamStateError, match="bytes"):
        _online().load(_likelihood().dump(_likelihood().new_state()))


@pytest.mark.parametrize(
    ("saved", "loading"),
    [
        (_online, _novel),
        (_novel, _online),
        (_profiled, _gated),
        (_gated, _profiled),
        (_gated, _released),
        (_released, _gated),
    ],
)
def test_a_state_with_or_without_novelty_is_refused_by_the_other(saved, loading):
    """A model with range novelty (or the tail gate) after one without (an upgrade), or the
    other way round."""
    with pytest.raises(StreamStateError, match="bytes"):
        loading().load(saved().dump(saved().new_state()))


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_wild_input_neither_poisons_the_state_nor_blinds_the_asset(make):
    """NaN scores, infinite and enormous readings: the state stays finite, the wild windows
    score high, and a later shift on normal data is still seen."""
    stream = make()
    state = stream.new_state()
    raw, windows = _data(400)
    raw[100:110] = np.nan
    windows[200:205] = 1e300
    windows[300:302] = np.inf
    out = stream.step(state, raw, windows, TIMES[:400])
    assert np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    assert np.isfinite(np.frombuffer(stream.dump(state), dtype=np.float64)).all()
    stream.load(stream.dump(state))
    raw, windows = _data(3000, shift_at=2000, seed=9)
    later = stream.step(state, raw, windows, TIMES[400:3400])
    assert (later[2000:2020] >= 0.5).any(), "the asset still alerts on a real shift"


def test_alert_z_sets_how_far_a_shift_must_go_to_score_one_half():
    raw, windows = _data(3000, shift_at=2000)
    eager = _likelihood(alert_z=1.0)
    strict = _likelihood(alert_z=50.0)
    assert (eager.step(eager.new_state(), raw, windows)[2000:] >= 0.5).any()
    assert not (strict.step(strict.new_state(), raw, windows) >= 0.5).any()


def test_without_learning_while_alerting_a_shift_stays_alerting():
    """alarm_learning 0 freezes the baseline once the asset alerts: the bound on learning is
    what keeps a fault from being learnt as normal before it fired (here: ever)."""
    raw, windows = _data(6000, shift_at=2000)
    frozen = _likelihood(alarm_learning=0.0)
    out = frozen.step(frozen.new_state(), raw, windows)
    assert (out[2005:] >= 0.5).all()


def test_drift_reports_how_far_the_scores_moved_from_training():
    stream = _likelihood()
    state = stream.new_state()
    assert stream.drift(state) is None, "too few windows seen"
    raw, windows = _data(2000)
    stream.step(state, raw, windows)
    calm = stream.drift(state)
    raw, windows = _data(3000, shift_at=0, seed=4)
    stream.step(state, raw, windows)
    assert 0.0 <= calm < 0.3 < stream.drift(state) <= 1.0
    assert Stream(StreamParams(), WINDOW, SENSORS).drift(state) is None


def test_the_online_model_must_fit_the_sensors_and_be_consistent():
    online = _online().params.online
    with pytest.raises(ValueError, match="features for 3 sensors"):
        Stream(_online().params, WINDOW, 3)
    with pytest.raises(ValueError, match="go together"):
        StreamParams(method="online")
    with pytest.raises(ValueError, match="go together"):
        StreamParams(method="likelihood", online=online)
    with pytest.raises(ValueError, match=r"scale\.1\n.*greater than or equal"):
        OnlineParams(mean=[0.0, 1.0], scale=[1.0, 0.0], threshold=1.0, spread=1.0)
    with pytest.raises(ValueError, match=r"mean\.0\n"):
        OnlineParams(mean=[float("nan"), 1.0], scale=[1.0, 1.0], threshold=1.0, spread=1.0)
    with pytest.raises(ValueError, match="at most 512"):
        OnlineParams(mean=[0.0] * 514, scale=[1.0] * 514, threshold=1.0, spread=1.0)


def test_hold_keeps_a_level_that_hovers_at_the_threshold_from_firing_again_and_again():
    t = np.arange(4000)
    logits = np.full(4000, -2.0)
    logits[1000:] = -2.0 + 2.8 + np.sin(2 * np.pi * t[1000:] / 200)  # z swings across alert_z
    raw, windows = _scores(logits), np.zeros((4000, WINDOW, SENSORS))

    def onsets(hold: float) -> int:
        # A baseline that barely learns, so the level keeps hovering where it is.
        return len(_onsets(_likelihood(**FIXED, hold=hold), raw, windows))

    assert onsets(0.0) > 5
    assert onsets(2.0) == 1


@pytest.mark.parametrize("spaced", [False, True], ids=["sustained", "one-in-twenty"])
def test_wild_readings_do_not_teach_the_online_model_to_stop_seeing(spaced):
    """A publisher who sends finite but enormous readings (1e100: no overflow, so they are
    learnt from) must not inflate the learnt spread until real faults vanish in it. Each step
    was clipped to 10 of the *learnt* spreads, so the variance grew by a factor (1 + 100 rate)
    per wild window, compounding: after 5000 of them it was 1e100 training variances, and
    one in twenty (too few to alert, learnt at the full rate) did as much. Now it is at most
    100, learnt away like any change: a 6-spread shift is seen 8 / learning_rate windows
    later (ln 100 = 4.6 time constants, with room)."""
    stream = _online()
    state = stream.new_state()
    stream.step(state, *_data(500, seed=1))
    for k in range(250 if spaced else 1):
        raw, windows = _data(20 if spaced else 5000, seed=2 + k)
        windows[-1 if spaced else slice(None)] = 1e100
        stream.step(state, raw, windows)
    stream.load(stream.dump(state))  # within the bounds a saved state is held to
    raw, windows = _data(8100, shift_at=8000, seed=9)
    out = stream.step(state, raw, windows)
    assert (out[8000:8020] >= 0.5).any(), "a real shift after the attack is still seen"


@pytest.mark.parametrize("make", [_likelihood, _online], ids=["likelihood", "online"])
def test_the_smallest_spread_floor_with_a_constant_baseline_scores(make):
    """min_spread at its lowest, a baseline of no spread and a score that never moves: no
    division by zero, scores in [0, 1]."""
    stream = make(min_spread=StreamParams.model_fields["min_spread"].metadata[0].ge)
    stream.params = stream.params.model_copy(update={"baseline_std": 0.0})
    state = stream.new_state()
    raw, windows = _data(50)
    raw[:] = 0.25
    windows[:] = 0.0
    out = stream.step(state, raw, windows)
    assert np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()


def test_the_layer_reads_the_graphs_calibrated_logit_past_0_9():
    """The graph's score is a sigmoid only up to 0.9 (the trainer's squash); the layer's u must
    be the logit the training baseline was fitted on, not log(s / (1 − s)) of the tail."""
    from agent.model.stream import _logit
    from trainer.calibration import squash

    z = np.array([-6.0, -1.0, 0.0, 2.0, np.log(9.0), 2.5, 4.0, 8.0, 12.0, 15.0])
    scores = squash(z).astype(np.float32)  # the graph's output type
    assert [_logit(float(s)) for s in scores] == pytest.approx(z.tolist(), abs=1e-3)
    assert _logit(float(squash(np.array([40.0]))[0])) == 16.0  # clipped, not beyond


def test_the_layer_state_does_not_depend_on_how_the_graph_batched_the_windows(trained, sim_data):
    """ONNX Runtime scores a window in float64 with last-bit differences by its place in a
    batch; after a restart the agent batches differently. The layer must end in the same state
    however the windows were batched (the kill -9 test compares the states byte for byte)."""
    from agent.model.score import Scorer
    from agent.model.table import read_table
    from trainer.features import sliding_windows

    scorer = Scorer.from_bytes(trained.model_bytes, sim_data.live_csv)
    m = scorer.manifest
    values = read_table(sim_data.live_csv).matrix(m.sensor_names)
    windows = np.ascontiguousarray(sliding_windows(values.astype(np.float32), m.window))
    whole = scorer.score_many(windows).score
    one_by_one = np.concatenate(
        [scorer.score(windows[i : i + 1]).score for i in range(len(windows))]
    )
    assert (whole != one_by_one).any(), "premise: the graph's float64 scores differ by batch"
    stream = Stream(m.stream, m.window, len(m.sensors))
    states = []
    for raw in (whole, one_by_one):
        state = stream.new_state()
        stream.step(state, raw, windows)
        states.append(stream.dump(state))
    assert states[0] == states[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sensors", [1, 2, 8])
@pytest.mark.parametrize("length", [1, 5, 8, 9, 17, 20, 64, 65, 130])
def test_the_online_features_are_numpys_mean_and_std_bit_for_bit(dtype, sensors, length):
    """`prepare` sums a few readings in plain floats and the rest in raw ufuncs, with the
    window's axis outermost for several sensors; by every path it must be what `mean` and
    `std` give, on wild values too (inf, NaN, -0.0, past float32's range), or scores would move
    by the batch. Windows come whole, one at a time (the live case) and as the pipeline's views
    of one buffer of rows."""
    rng = np.random.default_rng([sensors, length])
    rows = rng.normal(0.0, 1.0, (length + 63, sensors)) * rng.lognormal(0.0, 6.0, (1, sensors))
    rows[3, 0], rows[7:9, -1], rows[12, -1] = np.inf, -np.inf, np.nan
    rows[20:40, 0] = -0.0
    rows[50] = 1e100 if dtype is np.float64 else 3e38
    rows = rows.astype(dtype)
    windows = np.lib.stride_tricks.sliding_window_view(rows, length, axis=0).transpose(0, 2, 1)
    online = OnlineParams(
        mean=[0.0] * 2 * sensors, scale=[1.0] * 2 * sensors, threshold=1, spread=1
    )
    model = Stream(StreamParams(method="online", online=online), length, sensors).model
    with np.errstate(over="ignore", invalid="ignore"):
        wide = windows.astype(np.float64)
        want = np.concatenate([wide.mean(axis=1), wide.std(axis=1)], axis=1)
    for got in [
        np.asarray(model.prepare(windows)),
        np.asarray(model.prepare(np.ascontiguousarray(windows))),
        np.asarray([model.prepare(windows[i : i + 1])[0] for i in range(len(windows))]),
        np.asarray([f for i in range(0, 64, 3) for f in model.prepare(windows[i : i + 3])]),
    ]:
        np.testing.assert_array_equal(got, want)
        assert got.tobytes() == want.tobytes(), "the same bits, NaNs and signs included"


@pytest.mark.parametrize("sensors", [1, 2])
def test_the_online_features_of_integer_windows_are_those_of_their_floats(sensors):
    """Integers past 2**53 are not floats: summed as Python ints (the plain path of a window
    alone) they gave other features than numpy's `mean` of their float64 values."""
    rng = np.random.default_rng(7)
    windows = rng.integers(2**53, 2**62, (50, WINDOW * 4, sensors)) * rng.choice(
        [-1, 1], (50, 1, 1)
    )
    online = OnlineParams(
        mean=[0.0] * 2 * sensors, scale=[1.0] * 2 * sensors, threshold=1, spread=1
    )
    model = Stream(StreamParams(method="online", online=online), WINDOW * 4, sensors).model
    wide = windows.astype(np.float64)
    want = np.concatenate([wide.mean(axis=1), wide.std(axis=1)], axis=1)
    got = np.asarray([model.prepare(windows[i : i + 1])[0] for i in range(len(windows))])
    assert got.tobytes() == want.tobytes()
    assert np.asarray(model.prepare(windows)).tobytes() == want.tobytes()


def test_the_online_step_in_plain_floats_is_the_vector_formula():
    """The per-window step is written in plain floats (a numpy call per feature costs more
    than the arithmetic); it computes the diagonal Gaussian's update, up to rounding."""
    model = _online().model
    p = model.params
    scale = np.asarray(p.scale)
    mean, var = np.asarray(p.mean), scale**2
    state = model.new_state().tolist()
    _, windows = _data(3000, shift_at=1500, seed=5)
    for i, feats in enumerate(model.prepare(windows * 3.0)):
        gate = 0.05 if i % 3 == 0 else 1.0  # as while alerting
        diff = np.asarray(feats) - mean
        raw = float(np.sum(diff * diff / var)) / model.d
        rate = p.learning_rate * gate
        step = np.clip(diff, -10 * scale, 10 * scale)
        mean = mean + rate * step
        var = np.maximum((1 - rate) * (var + rate * step * step), 0.25 * scale**2)
        u = model.step(state, feats, gate)
        assert u == pytest.approx(min(max((raw - p.threshold) / p.spread, -16), 16), rel=1e-12)
    np.testing.assert_allclose(state, np.concatenate([mean, var]), rtol=1e-12)


def test_novelty_sees_a_spike_the_window_averages_hide():
    """One reading 4 spreads out (half a training range past it) moves the window means by a
    fifth of that: the online likelihood alone stays quiet, with range novelty the windows
    holding it alert, and only those."""
    raw, windows = _data(2000, seed=4)
    windows = np.clip(windows, -1.9, 1.9)
    for w in range(WINDOW):  # the reading at row 1500 is in these windows' slot WINDOW-1-w
        windows[1500 + w, WINDOW - 1 - w, 0] = 4.0
    plain, novel = _online(), _novel()
    assert (plain.step(plain.new_state(), raw, windows)[1500:1520] < 0.5).all()
    out = novel.step(novel.new_state(), raw, windows)
    assert (out[1500 : 1500 + WINDOW] > 0.5).all() and (out[1500 + WINDOW : 1600] < 0.5).all()


def test_the_profile_sees_a_day_that_does_not_follow_the_clock():
    """Ten days of a daily cycle, then a day whose every value is ordinary but twelve hours
    out of phase: the graph's score does not move, the daily profile alerts; without times
    (the profile left out) nothing does."""
    days, per_day = 12, 288
    n = days * per_day
    t = np.arange(n)
    rng = np.random.default_rng(5)
    phase = 2 * np.pi * t / per_day
    phase[10 * per_day : 11 * per_day] += np.pi
    values = 3.0 * np.sin(phase)[:, None] + rng.normal(0, 0.2, (n, SENSORS))
    windows = np.stack([np.roll(values, -k, axis=0) for k in range(WINDOW)], axis=1)[: n - WINDOW]
    raw = _data(len(windows), seed=6)[0]
    spread = float(values[: 2 * per_day].std())
    profile = ProfileParams(
        mean=[0.0, 0.0],
        spread=[spread, spread],
        median=1.0,
        scale=2.0,
        baseline_mean=-1.5,
        baseline_std=0.5,
        baseline_weight=100,
    )
    stream = _likelihood(profile=profile)
    ends = TIMES[WINDOW - 1 : WINDOW - 1 + len(windows)]
    out = stream.step(stream.new_state(), raw, windows, ends)
    odd_day = slice(10 * per_day, 11 * per_day - WINDOW)
    assert (out[odd_day] >= 0.5).mean() > 0.5
    assert (out[3 * per_day : 10 * per_day - WINDOW] < 0.5).mean() > 0.99
    blind = stream.step(stream.new_state(), raw, windows)
    assert not (blind[odd_day] >= 0.5).any()


def test_the_hours_of_times_are_hour_of_each_whatever_came_before():
    """The layer keeps the last hour it found and the times it covers, to skip `hour_of` for
    readings in the same hour; the hours must be `hour_of`'s for every time whatever time came
    before it (the batch before, or another asset's on the same layer): hours' edges to the
    float, fractions, steps back, times before 1970, NaN, ±inf, and times where the span's
    floats stop being exact; in one batch and one time at a time."""
    edges = [3600.0 * k + d for k in (-2, -1, 0, 1, 473_352, 2**40 // 3600) for d in (0.0, -0.5)]
    edges += [np.nextafter(3600.0 * 473_353, 0.0), 3600.0 * 473_353, -0.0]
    wild = [np.nan, np.inf, -np.inf, 2.0**40, np.nextafter(2.0**40, 0.0), 2.0**53 + 2.0]
    wild += [2.0**60, 1e300, -1e300, -1.5, 1_704_067_200.25]
    rng = np.random.default_rng(3)
    ticks = 1_704_067_199.0 + np.cumsum(rng.choice([0.25, 1.0, 60.0, 3599.0], 400))
    # Past 2**57 s an hour holds few floats, and its start rounded to one is not its start.
    far = [2.0**e + np.spacing(2.0**e) * np.arange(-40, 40) for e in (57, 62, 70)]
    times = np.concatenate([edges, wild, ticks, rng.permutation(ticks), *far])
    orders = [times, times[::-1], rng.permutation(times), np.repeat(times, 2)]
    stream = _profiled()
    for order in orders:
        values = order.tolist()
        assert stream._hours(values) == [hour_of(t) for t in values]
        assert [stream._hours([t])[0] for t in values] == [hour_of(t) for t in values]


@pytest.mark.parametrize("reading", [3e38, -3e38, 1e300])
def test_a_state_widened_by_the_largest_reading_loads(reading):
    """Training ranges as wide as a manifest may hold (±1e30: growth 2e31 a step) and the
    largest reading a float32 window holds: the step left a range past the 2e30 that `load`
    accepted, so after a restart the asset's layer started afresh as if damaged (a crash gave
    other scores than an undisturbed run). 1e300 comes only through float64 windows."""
    novelty = NoveltyParams(low=[-1e30, -1e30], high=[1e30, 1e30])
    stream = _online(novelty=novelty)
    state = stream.new_state()
    raw, windows = _data(20)
    windows[10:, -1, 0] = reading
    stream.step(state, raw, windows)
    loaded = stream.load(stream.dump(state))
    assert loaded.novelty == state.novelty
    assert max(abs(v) for v in state.novelty[6:]) <= float(np.finfo(np.float32).max)


def _bursts(n: int, bursts: dict[int, tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Graph scores of a quiet stream (logit −2 ± 0.5) with bursts {start: (windows, height in
    logits)}, and empty windows."""
    logits = np.random.default_rng(5).normal(-2.0, 0.5, n)
    for start, (length, height) in bursts.items():
        logits[start : start + length] += height
    return _scores(logits), np.zeros((n, WINDOW, SENSORS))


def _onsets(stream: Stream, raw: np.ndarray, windows: np.ndarray) -> np.ndarray:
    above = stream.step(stream.new_state(), raw, windows) >= 0.5
    return np.flatnonzero(above[1:] & ~above[:-1]) + 1


# A baseline that barely learns, so what changes between the runs is the gate alone.
FIXED = {"long_window": 10**6, "baseline_weight": 10**6}


def test_the_tail_gate_keeps_smaller_bursts_after_a_large_one_from_alerting():
    """A bursty asset: after a long saturated burst, bursts that the layer reads 4.8 baseline
    spreads out each alert without the gate and none does with it; a burst past the gate's
    cap (8 spreads) still alerts."""
    moderate = {2000 + 300 * k: (10, 5.0) for k in range(10)}
    raw, windows = _bursts(6000, {1000: (300, 20.0), **moderate, 5500: (10, 12.0)})
    plain = _onsets(_likelihood(**FIXED), raw, windows)
    gated = _onsets(_likelihood(**FIXED, tail_quantile=0.995, tail_step=0.05), raw, windows)
    after = [(a, a + 30) for a in moderate]
    assert all(any(a <= t < b for t in plain) for a, b in after), "each burst alerts ungated"
    assert not any(a <= t < b for t in gated for a, b in after), "none alerts gated"
    assert any(1000 <= t < 1030 for t in gated), "the first burst alerts at its onset"
    assert any(5500 <= t < 5530 for t in gated), "a burst past the cap alerts"


def test_the_tail_gate_changes_nothing_until_the_asset_shows_its_tail():
    """The gate starts where the Gaussian baseline alerts, so a first shift alerts on the
    same window with or without it."""
    raw, windows = _data(3000, shift_at=1500)
    plain = _onsets(_likelihood(), raw, windows)
    gated = _onsets(_likelihood(tail_quantile=0.995, tail_step=0.05), raw, windows)
    assert len(plain) and gated[0] == plain[0]


def test_a_first_shift_on_an_asset_calmer_than_its_training_alerts_as_without_the_gate():
    """The gate starts where the Gaussian baseline alerts and must move with it. An asset that
    runs lower and calmer than its training windows (logit −3.5 ± 0.3 against −2 ± 0.5) pulls
    its baseline down within a few hundred windows; a gate kept as a logit stayed at the
    training alert level, 1.3 logits above the new one, and sank back at 1/8,000 of a spread
    a window: a first shift of 3.7 logits went unseen, then was learnt as normal."""
    logits = np.random.default_rng(7).normal(-3.5, 0.3, 2000)
    logits[1500:] += 3.7
    raw, windows = _scores(logits), np.zeros((2000, WINDOW, SENSORS))
    plain = _onsets(_likelihood(), raw, windows)
    gated = _onsets(_likelihood(tail_quantile=0.995, tail_step=0.05), raw, windows)
    assert len(plain) and 1500 <= plain[0] < 1520, plain
    assert len(gated) and gated[0] == plain[0], (plain, gated)


def test_a_slow_ramp_and_a_fall_back_leave_the_tail_gate_where_it_was():
    """A level that climbs 12 logits over 4,000 windows (slowly enough for the baseline to
    follow: no alert) and falls back is not a burst. A gate kept as a logit climbed with the
    ramp, stayed at its cap (8 spreads) after the fall and sank back at 1/8,000 of a spread a
    window: with no alert raised, a fault of 5 spreads was unseen for (8 − 5) / (0.05 ×
    0.005) = 12,000 windows after (a hostile publisher's way to blind an asset quietly)."""
    logits = np.random.default_rng(9).normal(-2.0, 0.5, 11000)
    logits[1000:5000] += np.linspace(0.0, 12.0, 4000)
    logits[5000:6000] += 12.0
    logits[9000:9030] += 5.5
    raw, windows = _scores(logits), np.zeros((11000, WINDOW, SENSORS))
    for stream in (_likelihood(), _likelihood(tail_quantile=0.995, tail_step=0.05)):
        onsets = _onsets(stream, raw, windows)
        assert not any(t < 9000 for t in onsets), f"the ramp and the fall raise none: {onsets}"
        assert any(9000 <= t < 9030 for t in onsets), f"the fault alerts: {onsets}"


@pytest.mark.parametrize("cap", [6.0, 100.0])
def test_a_hostile_stream_cannot_lift_the_tail_gate_past_its_cap(cap):
    """Hours of saturated scores (a hostile or broken sensor) lift the gate's quantile as far
    as they can; a fault the layer reads 8.3 spreads out afterwards still alerts under a cap
    of 6 spreads, and would not with no cap to speak of."""
    raw, windows = _bursts(9000, {500: (4000, 30.0), 7000: (200, 6.0)})
    stream = _likelihood(**FIXED, tail_quantile=0.995, tail_step=0.1, tail_cap=cap)
    state = stream.new_state()
    out = stream.step(state, raw, windows)
    spread = np.sqrt(0.5**2 + 1.0)  # the baseline's, with the spread floor of 1
    assert state.tail <= cap * spread + 1e-9  # its distance above the baseline mean
    fires = (out[7000:7100] >= 0.5).any()
    assert fires == (cap == 6.0)


def test_a_tail_cap_at_or_below_alert_z_is_refused():
    params = _likelihood().params.model_dump()
    with pytest.raises(ValueError, match=r"tail_cap 2\.5 must be more than alert_z 2\.5"):
        StreamParams.model_validate({**params, "tail_quantile": 0.99, "tail_cap": 2.5})


@pytest.mark.parametrize(("quiet", "seen"), [(16000, False), (20000, True)])
def test_after_a_burst_lifts_the_tail_gate_to_its_cap_it_sinks_at_its_stated_pace(quiet, seen):
    """What the gate costs, as docs/detection.md states it: after a burst lifts it to its cap
    (8 spreads), a fault 3.5 spreads out is unseen until the quantile has sunk below it, about
    (8 − 3.5) / (0.05 × (1 − 0.995)) = 18,000 windows later, and seen from then on."""
    layer = _likelihood(**FIXED, alert_z=2.0, hold=1.0, tail_quantile=0.995, tail_step=0.05)
    spread = np.sqrt(0.5**2 + 1.0)
    raw, windows = _bursts(1000 + quiet + 40, {500: (300, 20.0), 1000 + quiet: (40, 3.5 * spread)})
    state = layer.new_state()
    out = layer.step(state, raw, windows)
    assert (out[500:510] >= 0.5).any(), "the burst alerts"
    assert not (out[900 : 1000 + quiet] >= 0.5).any(), "then the burst ends and all is quiet"
    assert (out[1000 + quiet :] >= 0.5).any() == seen


# The gate releasing an episode once the asset is back (`tail_climb`): what one episode may
# leave it, 30 windows of climbing, in spreads.
RELEASE = {"alert_z": 2.0, "hold": 1.0, "tail_quantile": 0.995, "tail_step": 0.05}


@pytest.mark.parametrize(("climb", "seen"), [(0, False), (30, True)])
def test_a_burst_that_ended_leaves_the_gate_only_what_its_first_windows_taught(climb, seen):
    """The wait the gate as first written costs (the test above): a saturated burst of 300
    windows lifts it to its cap, and a fault 3.5 spreads out 2,000 windows after the burst
    ended went unseen (for 18,000 windows). Once the asset is back where it was before the
    burst, the gate keeps only what 30 windows of climbing add to its height at the onset
    (1.5 spreads over the 2 it started at), and the fault alerts."""
    layer = _likelihood(**FIXED, **RELEASE, tail_climb=climb)
    spread = np.sqrt(0.5**2 + 1.0)
    raw, windows = _bursts(3040, {500: (300, 20.0), 3000: (40, 3.5 * spread)})
    state = layer.new_state()
    out = layer.step(state, raw[:3000], windows[:3000])
    assert (out[500:510] >= 0.5).any(), "the burst alerts"
    assert not (out[900:] >= 0.5).any(), "then all is quiet"
    if climb:
        assert state.episode[0] == 0.0, "the episode is over"
        assert state.tail <= (2.0 + 30 * 0.05 * 0.995) * spread + 1e-9
    else:
        assert state.tail > 7.0 * spread
    assert (layer.step(state, raw[3000:], windows[3000:]) >= 0.5).any() == seen


def _same_with_and_without_the_release(
    raw: np.ndarray, windows: np.ndarray, **update: object
) -> list[StreamState]:
    """The states after the gate without and with the release, whose scores are the same."""
    layers = [_likelihood(**update, **RELEASE, tail_climb=climb) for climb in (0, 30)]
    states = [layer.new_state() for layer in layers]
    kept, released = (
        layer.step(state, raw, windows) for layer, state in zip(layers, states, strict=True)
    )
    np.testing.assert_array_equal(kept, released)
    return states


def test_a_level_that_stays_up_keeps_the_gate_it_lifted():
    """A persisting shift is never back where it was: the gate keeps all it climbed (so the
    new normal's swings do not fire again while the baseline learns them), as without the
    release."""
    raw, windows = _data(6000, shift_at=2000)
    states = _same_with_and_without_the_release(raw, windows)
    assert states[1].episode[0] == 1.0, "the episode is still open"
    assert states[1].tail == states[0].tail > 4.0 * np.sqrt(0.5**2 + 1.0)


def test_bursts_shorter_than_the_climb_teach_the_gate_as_without_the_release():
    """What the gate is for is kept: bursts of 10 windows, each over before 30 windows of
    climbing, teach it all they lift, so the scores with the release are those without it,
    bit for bit, and the gate has climbed well past where it started."""
    raw, windows = _bursts(4500, {1000 + 300 * k: (10, 5.0) for k in range(10)})
    states = _same_with_and_without_the_release(raw, windows, **FIXED)
    assert states[1].tail == states[0].tail > 3.0 * np.sqrt(0.5**2 + 1.0)
    assert states[1].episode[0] == 0.0, "each burst came back"


def _misfits(count: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Graph scores, windows and times that do not fit a layer of SENSORS sensors."""
    raw, windows = _data(count, seed=4)
    times = TIMES[:count]
    return {
        "one sensor": (raw, windows[:, :, :1], times),
        "a sensor more": (raw, np.concatenate([windows, windows[:, :, :1]], axis=2), times),
        "no sensor": (raw, windows[:, :, :0], times),
        "no batch axis": (raw, windows[0], times),
        "a score more": (np.append(raw, raw[:1]), windows, times),
        "a time more": (raw, windows, TIMES[: count + 1]),
    }


@pytest.mark.parametrize("make", MAKERS[1:], ids=MAKER_IDS[1:])
@pytest.mark.parametrize("count", [1, 11, 12, 13, 64])
def test_windows_that_do_not_fit_the_layer_are_refused_by_name_before_it_learns(make, count):
    """Windows of another sensor count (a caller of the Python API, a model file swapped
    under a script): from 12 windows the novelty ranges were checked in numpy, which
    broadcast one sensor's readings over every range and scored them as if they fitted (a
    window alone was refused), and the online model learnt a state of another size, that the
    dump then failed on. Refused at once, by name, with the state as it was."""
    stream = make()
    state = stream.new_state()
    before = stream.dump(state)
    for what, (raw, windows, times) in _misfits(count).items():
        if what == "a time more" and stream.profile is None:
            continue  # only the daily profile reads the times
        with pytest.raises(ValueError, match=r"windows \[|times for"):
            stream.step(state, raw, windows, times)
        assert stream.dump(state) == before, what


def _numpy_layout(stream: Stream, state: StreamState) -> bytes:
    """The saved state as releases before the `struct` packing wrote it: numpy's float64
    bytes of the format, the main likelihood and the parts, in the machine's order."""
    fmt = 2
    if stream.params.tail_quantile > 0:
        fmt = 5 if stream.params.tail_climb else 4  # 5: the layout numpy never wrote
    head = [fmt, state.seen, state.short_mean, state.long_mean, state.long_var, state.last]
    if stream.params.tail_quantile > 0:
        head += [state.tail, *state.episode]
    parts = state.online + state.novelty + state.profile
    return np.asarray(head + parts, dtype=np.float64).tobytes()


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_a_state_saved_by_either_packing_loads_in_the_other(make):
    """Agents upgraded across the dump's change from numpy to `struct` keep their assets'
    states, and a downgrade too: the bytes are the same, holds and wild readings included."""
    stream = make()
    state = stream.new_state()
    raw, windows = _data(400, shift_at=200, seed=6)
    windows[250, -1, 1] = 1e30  # a range widened far, and a hold under way
    windows[260:270, -1, 0] = np.nan
    stream.step(state, raw, windows, TIMES[:400])
    old = _numpy_layout(stream, state)
    assert stream.dump(state) == old
    assert stream.dump(make().load(old)) == old


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_dumping_a_state_of_another_layer_is_refused_by_name(make):
    """A state made by another layer (another sensor count, method or part) is not this
    layer's to save: refused as such, not by the packing's own error."""
    stream = make()
    size = len(stream.dump(stream.new_state()))
    others = [m() for m in MAKERS]
    # The same count of numbers is left to `load`, which tells such layouts apart.
    others = [other for other in others if len(other.dump(other.new_state())) != size]
    assert len(others) == len(MAKERS) - 1
    for other in others:
        with pytest.raises(StreamStateError, match=r"a state of \d+ numbers for a layer of"):
            stream.dump(other.new_state())


def _edgy(count: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Graph scores and windows whose newest readings sit at the novelty ranges' edges (±2
    in `_novel`), a float64 step past them, at a range a spike widened past every other
    reading and a step past that (5.0000003, which float32 rounds up: a check of the ranges
    in float32 would not widen it), and are -0.0, subnormal or NaN for 12 windows."""
    raw, windows = _data(count, seed=8)
    rng = np.random.default_rng(8)
    edges = [2.0, -2.0, np.nextafter(2.0, 3.0), np.nextafter(-2.0, -3.0), -0.0, 1e-310, np.nan]
    for k in range(count // 2):
        windows[rng.integers(0, count), -1, rng.integers(0, SENSORS)] = edges[k % len(edges)]
    spike = 5.0000003
    windows[200:220, -1] = spike
    windows[220:230, -1, 0] = np.nextafter(spike, np.inf)
    windows[230:240, -1, 1] = -spike
    windows[240:252, -1] = np.nan
    if dtype is np.int64:
        return raw, np.nan_to_num(windows * 2.0).round().astype(np.int64)
    return raw, windows.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
@pytest.mark.parametrize("make", [_novel, _profiled, _gated, _released], ids=MAKER_IDS[2:])
def test_batches_checked_in_numpy_score_as_windows_one_at_a_time(make, dtype):
    """From 12 windows a batch checks its newest readings against the novelty ranges in numpy,
    as the ranges stood before the batch, and takes the hold's bookkeeping alone for those
    within (ranges only widen); one at a time each reading goes through `Novelty.step`. The
    scores and the state must be the same bits either way, at the ranges' edges, past a range
    widened earlier in the same batch, and for NaN, -0.0 and subnormal readings."""
    raw, windows = _edgy(400, dtype)
    times = TIMES[:400]
    alone = make()
    state = alone.new_state()
    want = [
        alone.step(state, raw[i : i + 1], windows[i : i + 1], times[i : i + 1]) for i in range(400)
    ]
    want_state = alone.dump(state)
    for size in (11, 12, 13, 64, 400):
        stream = make()
        state = stream.new_state()
        got = [
            stream.step(state, raw[a : a + size], windows[a : a + size], times[a : a + size])
            for a in range(0, 400, size)
        ]
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want), f"batch {size}")
        assert stream.dump(state) == want_state, f"batch {size}"
