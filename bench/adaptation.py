"""What the stream layer's adaptation adds per reading over the `online` model's own work (#15:
at most 5 µs).

A model trained with `online` gets the default stream (trainer/streaming.py): the online model
rescores each window (its window features and its step: the detector's own work, as a graph's
score is for the other detectors), then the adaptation turns that into the adapted score: the
likelihood, range novelty, the daily profile and its likelihood, the tail gate and the batch's
conversions. Both are timed on the same windows, one after the other: the whole `Stream.step`
(with each window's time, so the daily profile is in, as in the pipeline) and the online
model's features and step alone; the adaptation is the difference. For the shipped models'
sensors (the simulated pump's five) and for eight (SKAB's), trained the same way. The state the
pipeline commits after each batch is timed apart (`dump_us`): most of it is the profile's 24
hours per sensor.
"""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import numpy as np

from agent.model.score import Scorer
from agent.model.stream import Stream
from agent.model.table import read_table
from bench.harness import Models
from trainer.simulate import simulate
from trainer.train import TrainOptions, train, write_model

# The readings' times: a reading a second from 2026-01-01 (the bench's other cases' too).
START = 1_767_225_600.0
BLOCK = 512  # the batched figure's blocks, as `stream_cost`'s
_WARM = 200


def adaptation_cost(models: Models, folder: Path, calls: int) -> dict[str, dict[str, float]]:
    """Per sensor count: µs per window of the whole layer (`layer_us`), of the online model's
    own features and step (`online_us`), the median of their difference window by window
    (`adds_us`), the same in blocks of 512 (`batched_adds_us`), and the dump."""
    wide_csv = _wide_csv(folder / "wide.csv", sensors=8)
    wide = train(wide_csv, TrainOptions(algorithm="online", model_id="bench_online_wide"))
    wide_path = write_model(wide, folder / "online_wide.onnx")
    shipped = models.paths["online"]
    return {
        f"{len(Scorer.load(shipped).manifest.sensors)} sensors": _cost(
            shipped, models.train_csv, calls
        ),
        "8 sensors": _cost(wide_path, wide_csv, calls),
    }


def _wide_csv(path: Path, sensors: int) -> Path:
    """The simulated pump's readings, widened with a second pump's to `sensors` columns."""
    stamps, first, _ = simulate(4000, [], seed=1)
    second = simulate(4000, [], seed=2)[1]
    values = np.concatenate([first, second], axis=1)[:, :sensors]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["timestamp", *(f"s{j}" for j in range(sensors))])
        for stamp, row in zip(stamps, values, strict=True):
            rows.writerow([stamp, *(f"{v:.4f}" for v in row)])
    return path


def _cost(model: Path, data_csv: Path, calls: int) -> dict[str, float]:
    scorer = Scorer.load(model)
    manifest = scorer.manifest
    stream = Stream(manifest.stream, manifest.window, len(manifest.sensors))
    online = stream.model
    if online is None or stream.profile is None:
        raise RuntimeError(f"{model}: its stream is not `online` with the daily profile")
    table = read_table(data_csv)
    data = table.matrix(manifest.sensor_names).astype(np.float32)
    w = manifest.window
    count = min(calls + _WARM, len(data) - w + 1)
    windows = np.lib.stride_tricks.sliding_window_view(data[: count + w - 1], w, axis=0)
    windows = np.ascontiguousarray(windows.transpose(0, 2, 1))
    raw = scorer.score_many(windows).score
    times = START + (w - 1) + np.arange(count, dtype=np.float64)  # each window's newest
    state, own = stream.new_state(), online.new_state().tolist()
    layer, alone, adds, dumps = [], [], [], []
    for i in range(count):
        one = windows[i : i + 1]
        t0 = time.perf_counter_ns()
        stream.step(state, raw[i : i + 1], one, times[i : i + 1])
        t1 = time.perf_counter_ns()
        online.step(own, online.prepare(one)[0], 1.0)
        t2 = time.perf_counter_ns()
        stream.dump(state)
        t3 = time.perf_counter_ns()
        if i >= _WARM:
            layer.append((t1 - t0) / 1000)
            alone.append((t2 - t1) / 1000)
            adds.append((t1 - t0 - (t2 - t1)) / 1000)
            dumps.append((t3 - t2) / 1000)
    layer_block, alone_block = _blocks(stream, raw, windows, times)
    return {
        "layer_us": statistics.median(layer),
        "online_us": statistics.median(alone),
        "adds_us": statistics.median(adds),
        "adds_p99": sorted(adds)[int(len(adds) * 0.99)],
        "batched_adds_us": layer_block - alone_block,
        "dump_us": statistics.median(dumps),
        "state_bytes": len(stream.dump(state)),
        "n": len(adds),
    }


def _blocks(
    stream: Stream, raw: np.ndarray, windows: np.ndarray, times: np.ndarray
) -> tuple[float, float]:
    """µs per window in blocks of `BLOCK`: the whole layer, then the online model alone."""
    online = stream.model
    assert online is not None  # checked by the caller
    state, own = stream.new_state(), online.new_state().tolist()
    t0 = time.perf_counter_ns()
    for a in range(0, len(raw), BLOCK):
        stream.step(state, raw[a : a + BLOCK], windows[a : a + BLOCK], times[a : a + BLOCK])
    t1 = time.perf_counter_ns()
    for a in range(0, len(raw), BLOCK):
        for feats in online.prepare(windows[a : a + BLOCK]):
            online.step(own, feats, 1.0)
    t2 = time.perf_counter_ns()
    return (t1 - t0) / 1000 / len(raw), (t2 - t1) / 1000 / len(raw)
