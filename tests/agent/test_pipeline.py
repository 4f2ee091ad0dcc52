"""The pipeline's stage logic called directly, with a real ONNX model: no broker, no database.

Ordering and copy detection were tested only through a subprocess and a broker (#14); here the
same rules are held one batch at a time."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.model.offline import score_table
from agent.model.score import Scorer
from agent.model.stream import StreamParams, StreamStateError
from agent.model.table import read_table
from agent.pipeline import Applied, Message, Pipeline
from tests.conftest import DEVICE

TOPIC = f"edge/{DEVICE}/readings/"
T0 = 1_700_000_000.0

MakePipeline = Callable[..., Pipeline]


def _config(model_path: Path, tmp_path: Path, **ingest: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "device": {"id": DEVICE},
            "upstream": {"host": "127.0.0.1"},
            "model": {"path": str(model_path)},
            "storage": {"data_dir": str(tmp_path)},
            "ingest": ingest,
        }
    )


@pytest.fixture
def make_pipeline(model_path: Path, tmp_path: Path) -> MakePipeline:
    scorer = Scorer.load(model_path)

    def make(**ingest: object) -> Pipeline:
        clock = iter(range(1, 1_000_000))
        return Pipeline(_config(model_path, tmp_path, **ingest), scorer, lambda: next(clock))

    return make


class Sender:
    """Messages as a publisher sends them: one reading each, values near the training means."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.sensors = pipeline.scorer.manifest.sensor_names
        self.means = [s.mean for s in pipeline.scorer.manifest.sensors]
        self.mid = 0

    def payload(self, ts: float, shift: float = 0.0) -> bytes:
        values = {name: float(m + shift) for name, m in zip(self.sensors, self.means, strict=True)}
        return json.dumps({"ts": ts, **values}).encode()

    def message(self, asset: str, payload: bytes, dup: bool = False) -> Message:
        self.mid += 1
        return Message(TOPIC + asset, payload, T0 + 1_000, self.mid, dup, 1)

    def readings(self, asset: str, stamps: list[float], shift: float = 0.0) -> list[Message]:
        return [self.message(asset, self.payload(T0 + ts, shift)) for ts in stamps]


def _stored_ts(result: Applied, asset: str = "pump1") -> list[float]:
    blocks = [b for b in result.batch.readings if b.asset == asset]
    return [t - T0 for b in blocks for t in b.ts.tolist()]


def _reasons(result: Applied) -> list[str]:
    return [d.reason for d in result.batch.dead]


def _apply(pipeline: Pipeline, messages: list[Message]) -> Applied:
    """Apply and remember, as the runtime does once the batch has committed."""
    result = pipeline.apply(messages)
    pipeline.remember(result.batch.digests)
    return result


def test_a_batch_is_put_in_time_order_across_messages(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline()
    send = Sender(pipeline)
    result = _apply(pipeline, send.readings("pump1", [3, 1, 2]))
    assert _stored_ts(result) == [1, 2, 3]
    assert _reasons(result) == []
    assert [gave for _digest, gave in result.batch.digests] == [True, True, True]
    assert [s.asset for s in result.batch.states] == ["pump1"]


def test_readings_not_after_the_last_are_dead_letters(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline()
    send = Sender(pipeline)
    _apply(pipeline, send.readings("pump1", [1, 2, 5]))
    # Other values than before: not copies of the messages already applied.
    late = [*send.readings("pump1", [3, 5, 6], 0.25), send.message("pump1", send.payload(T0 + 6))]
    result = _apply(pipeline, late)
    assert _stored_ts(result) == [6]
    assert sorted(_reasons(result)) == ["duplicate_ts", "duplicate_ts", "out_of_order"]
    assert {d.detail for d in result.batch.dead} == {f"ts {T0 + t}" for t in (3, 5, 6)}


def test_a_copy_of_an_applied_message_is_skipped(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline()
    send = Sender(pipeline)
    first = send.readings("pump1", [1, 2])
    _apply(pipeline, first)
    # A publisher's resend (no DUP), in a later batch and twice within one batch.
    again = [send.message("pump1", first[1].payload)]
    twice = send.readings("pump1", [3])
    result = _apply(pipeline, again + twice + twice)
    assert result.copies == 1
    assert _stored_ts(result) == [3]
    assert _reasons(result) == []
    assert len(result.batch.digests) == 2  # the copy within the batch is recorded as applied


def test_garbage_sent_twice_is_two_dead_letters_but_a_dup_redelivery_is_skipped(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = make_pipeline()
    send = Sender(pipeline)
    garbage = send.message("pump1", b"not json")
    assert _reasons(_apply(pipeline, [garbage])) == ["invalid_json"]
    assert _reasons(_apply(pipeline, [send.message("pump1", b"not json")])) == ["invalid_json"]
    redelivered = _apply(pipeline, [send.message("pump1", b"not json", dup=True)])
    assert (_reasons(redelivered), redelivered.copies) == ([], 1)
    # A DUP copy of a message earlier in the same batch, never applied before.
    fresh = send.readings("pump1", [4])
    result = _apply(pipeline, [*fresh, send.message("pump1", fresh[0].payload, dup=True)])
    assert (_stored_ts(result), result.copies, _reasons(result)) == ([4], 1, [])


def test_a_reading_from_the_future_is_a_dead_letter(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline(max_future_s=60)
    send = Sender(pipeline)
    result = _apply(pipeline, send.readings("pump1", [1, 1_000 + 61]))
    assert _stored_ts(result) == [1]
    assert _reasons(result) == ["future_ts"]


def test_a_new_asset_beyond_max_assets_is_a_dead_letter(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline(max_assets=1)
    send = Sender(pipeline)
    result = _apply(pipeline, send.readings("pump1", [1]) + send.readings("pump2", [1, 2]))
    assert _stored_ts(result) == [1]
    assert _reasons(result) == ["too_many_assets", "too_many_assets"]
    assert len(pipeline.windows) == 1
    assert _stored_ts(_apply(pipeline, send.readings("pump1", [2]))) == [2]


def test_windows_complete_across_batches_as_in_one(make_pipeline: MakePipeline) -> None:
    window = make_pipeline().scorer.manifest.window
    stamps = [float(t) for t in range(1, window + 3)]
    whole = make_pipeline()
    send = Sender(whole)
    once = _apply(whole, send.readings("pump1", stamps, shift=0.5))
    split = make_pipeline()
    half = len(stamps) // 2
    halves = (stamps[:half], stamps[half:])
    parts = [_apply(split, send.readings("pump1", s, shift=0.5)) for s in halves]
    assert once.scored == sum(p.scored for p in parts) == len(stamps) - window + 1
    joined = np.concatenate([p.batch.readings[0].score for p in parts])
    np.testing.assert_allclose(joined, once.batch.readings[0].score, equal_nan=True)
    assert np.isnan(joined[: window - 1]).all() and not np.isnan(joined[window - 1 :]).any()


def test_restore_returns_to_the_committed_state(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline()
    send = Sender(pipeline)
    committed = _apply(pipeline, send.readings("pump1", [1, 2, 3]))
    # A batch whose commit failed: its changes are undone from the committed states.
    pipeline.apply(send.readings("pump1", [4, 5]) + send.readings("pump2", [1]))
    pipeline.restore(committed.batch.states)
    assert pipeline.windows.assets() == ["pump1"]
    retried = pipeline.apply(send.readings("pump1", [4, 5]))
    assert (_stored_ts(retried), _reasons(retried)) == ([4, 5], [])
    pipeline.forget(["pump1"])
    assert len(pipeline.windows) == 0


def test_recent_digests_are_bounded(
    make_pipeline: MakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.pipeline.RECENT_DIGESTS", 2)
    pipeline = make_pipeline()
    send = Sender(pipeline)
    sent = send.readings("pump1", [1, 2, 3])
    _apply(pipeline, sent)
    assert list(pipeline.recent) == [m.digest for m in sent[1:]]


# The streaming layer (#15). Its math is agent.model.stream's; here only that its state flows:
# made beside the window, stepped once per window in time order, committed, restored, bounded.
# `CountingStream` has Stream's interface and a state that changes every score, so these tests
# hold the plumbing whatever the layer's math becomes.


@dataclass
class _Count:
    seen: int = 0


class CountingStream:
    def __init__(self, params: StreamParams, window: int, n_sensors: int) -> None:
        self.params = params

    def new_state(self) -> _Count:
        return _Count()

    def step(
        self, state: _Count, raw: np.ndarray, windows: np.ndarray, times: np.ndarray
    ) -> np.ndarray:
        assert len(times) == len(raw)  # each window's newest reading's time
        out = (raw + (state.seen + np.arange(len(raw))) % 7) / 8
        state.seen += len(raw)
        return out.astype(np.float32)

    def dump(self, state: _Count) -> bytes:
        return struct.pack("<4sq", b"CNT1", state.seen)

    def load(self, data: bytes) -> _Count:
        if len(data) != 12 or data[:4] != b"CNT1":
            raise StreamStateError(f"not a counting state: {data[:4]!r}, {len(data)} bytes")
        return _Count(struct.unpack("<4sq", data)[1])

    def drift(self, state: _Count) -> float | None:
        return {0: None, 1: float("nan")}.get(state.seen, state.seen / 100)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingStream]:
    """The pipeline and offline scoring build their layer from CountingStream."""
    monkeypatch.setattr("agent.pipeline.Stream", CountingStream)
    monkeypatch.setattr("agent.model.offline.Stream", CountingStream)
    return CountingStream


def _seen(pipeline: Pipeline, asset: str) -> int:
    return pipeline.streams[asset].seen


def test_each_asset_layer_steps_over_its_windows_and_is_committed(
    make_pipeline: MakePipeline, counting: type[CountingStream]
) -> None:
    pipeline = make_pipeline()
    send = Sender(pipeline)
    window = pipeline.scorer.manifest.window
    first = _apply(pipeline, send.readings("pump1", [float(t) for t in range(1, window + 4)]))
    _apply(pipeline, send.readings("pump2", [1.0, 2.0]))
    later = _apply(pipeline, send.readings("pump1", [window + 4.0, window + 5.0]))
    assert (_seen(pipeline, "pump1"), _seen(pipeline, "pump2")) == (4 + 2, 0)
    committed = {s.asset: pipeline.stream.load(s.stream).seen for s in later.batch.states}
    assert committed == {"pump1": 6}, "the state after the batch, committed with its window"
    assert pipeline.stream.load(first.batch.states[0].stream).seen == 4
    # Every window holds the same readings (the training means), so the same raw score: the
    # layer's output climbs by 1/8 per window, across the two batches.
    stored = np.concatenate([first.batch.readings[0].score, later.batch.readings[0].score])
    climb = stored[window - 1 :] * 8 - np.arange(6)
    np.testing.assert_allclose(climb, climb[0], atol=1e-5)


def test_restore_resumes_each_layer_and_a_state_that_does_not_load_starts_afresh(
    make_pipeline: MakePipeline, counting: type[CountingStream], caplog: pytest.LogCaptureFixture
) -> None:
    """Corrupt bytes (or another layer's) replace the asset's layer by a new one, counted and
    logged once, and the asset keeps being scored; no bytes (a row from before #15) give a new
    layer without a word."""
    pipeline = make_pipeline()
    send = Sender(pipeline)
    window = pipeline.scorer.manifest.window
    stamps = [float(t) for t in range(1, window + 3)]
    committed = _apply(pipeline, send.readings("pump1", stamps)).batch.states[0]
    states = [
        committed,
        replace(committed, asset="pump2", stream=b"\xff" * 5),
        replace(committed, asset="pump3", stream=b"OTHR" + bytes(8)),  # another layer's
        replace(committed, asset="pump4", stream=None),
    ]
    with caplog.at_level(logging.WARNING, logger="agent.pipeline"):
        pipeline.restore(states)
    seen = {a: _seen(pipeline, a) for a in ("pump1", "pump2", "pump3", "pump4")}
    assert seen == {"pump1": 3, "pump2": 0, "pump3": 0, "pump4": 0}
    assert pipeline.stream_states_replaced == 2
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "2 saved stream states did not load" in warning and "pump2,pump3" in warning
    after = _apply(pipeline, send.readings("pump2", [window + 3.0]))
    assert after.scored == 1 and not np.isnan(after.batch.readings[0].score).any()
    assert _seen(pipeline, "pump2") == 1


def test_layers_are_bounded_by_max_assets_and_forgotten_with_their_window(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = make_pipeline(max_assets=2)
    send = Sender(pipeline)
    for n in range(5):
        _apply(pipeline, send.readings(f"pump{n}", [1.0]))
    assert sorted(pipeline.streams) == sorted(pipeline.windows.assets()) == ["pump0", "pump1"]
    pipeline.forget(["pump0"])
    assert list(pipeline.streams) == ["pump1"]


class _Recorder:
    """A trial's health check, as far as the pipeline sees it: every score it is shown."""

    def __init__(self) -> None:
        self.scores: list[float] = []

    def observe(self, scores: np.ndarray, levels: list[str | None]) -> None:
        self.scores += scores.tolist()


class _Certain(CountingStream):
    def step(
        self, state: _Count, raw: np.ndarray, windows: np.ndarray, times: np.ndarray
    ) -> np.ndarray:
        state.seen += len(raw)
        return np.ones(len(raw), np.float32)


def test_levels_health_and_stored_readings_take_the_layer_score(
    make_pipeline: MakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer that says 1.0 over normal readings: the stored scores, the health check and the
    episodes see 1.0, not the graph's lower raw score."""
    send = Sender(make_pipeline())
    window = make_pipeline().scorer.manifest.window
    stamps = [float(t) for t in range(1, window + 6)]
    quiet = _apply(make_pipeline(), send.readings("pump1", stamps))
    assert np.nanmax(quiet.batch.readings[0].score) < 0.9, "the raw scores are lower"
    assert {a.level for _topic, a in quiet.batch.alerts} <= {"info", "warning"}
    monkeypatch.setattr("agent.pipeline.Stream", _Certain)
    pipeline = make_pipeline()
    pipeline.health = _Recorder()
    result = _apply(pipeline, send.readings("pump1", stamps))
    assert result.batch.readings[0].score[window - 1 :].tolist() == [1.0] * 6
    assert pipeline.health.scores == [1.0] * 6
    assert [(a.state, a.level) for _topic, a in result.batch.alerts] == [("firing", "critical")]
    assert set(result.batch.readings[0].level[window - 1 :].tolist()) == {3}


def test_drift_follows_each_layer_and_only_numbers_are_reported(
    make_pipeline: MakePipeline, counting: type[CountingStream]
) -> None:
    """Drift is brought up to date by `refresh_drifts` (the runtime's, once a second) for the
    layers that moved, and restored layers report at once."""
    pipeline = make_pipeline()
    send = Sender(pipeline)
    window = pipeline.scorer.manifest.window
    _apply(pipeline, send.readings("pump1", [float(t) for t in range(1, window)]))
    pipeline.refresh_drifts()
    assert pipeline.drifts == {}, "no window scored yet: None"
    _apply(pipeline, send.readings("pump1", [float(window)]))
    pipeline.refresh_drifts()
    assert pipeline.drifts == {}, "NaN is not reported"
    _apply(pipeline, send.readings("pump1", [window + 1.0, window + 2.0]))
    _apply(pipeline, send.readings("pump2", [float(t) for t in range(1, window + 4)]))
    assert pipeline.drifts == {}, "not before the refresh"
    pipeline.refresh_drifts()
    assert pipeline.drifts == {"pump1": 0.03, "pump2": 0.04}
    pipeline.forget(["pump1"])
    assert pipeline.drifts == {"pump2": 0.04}
    states = _apply(pipeline, send.readings("pump2", [window + 4.0])).batch.states
    pipeline.restore(states)
    assert pipeline.drifts == {"pump2": 0.05}, "restored layers report at once"


def test_offline_scoring_runs_the_same_layer_as_the_pipeline(
    make_pipeline: MakePipeline, counting: type[CountingStream], sim_data
) -> None:
    """`edge-agent score` (score_table) and the gateway give the same scores for one asset's
    rows, whatever the batches, with a layer whose output depends on its state."""
    pipeline = make_pipeline()
    table = read_table(sim_data.live_csv)
    offline = np.array(list(score_table(pipeline.scorer, table, batch_max=64)), dtype=float)
    values = table.matrix(pipeline.scorer.manifest.sensor_names)
    names = pipeline.scorer.manifest.sensor_names
    live: list[np.ndarray] = []
    for start in range(0, 300, 37):  # other batches than offline's
        rows = enumerate(values[start : start + 37], start=start)
        payloads = [{"ts": T0 + i, **dict(zip(names, r.tolist(), strict=True))} for i, r in rows]
        messages = [
            Message(TOPIC + "pump1", json.dumps(p).encode(), T0, i, False, 1)
            for i, p in enumerate(payloads, start=start)
        ]
        live.append(_apply(pipeline, messages).batch.readings[0].score)
    got = np.concatenate(live)
    np.testing.assert_allclose(got, offline[: len(got)], rtol=1e-6, equal_nan=True)
    assert np.nanmax(got) > 0.7, "the layer's output, not the raw score"
