"""Micro-benchmark of the stream layer (#15): microseconds per window, by method and batch size.

    python -m scripts.bench_stream
    python -m scripts.bench_stream --features
    python -m scripts.bench_stream --ranges

Prints the best of 5 runs per case, beside the cost of one small numpy call on this machine
at the time (a busy machine slows both alike; the ratio travels better than the figure).
With `--features`, the online model's window features instead, in plain floats and in numpy,
by readings per batch: where the two cost the same is where `OnlineModel.prepare` switches.
With `--ranges`, a batch's range novelty checks, each reading in Python (`Novelty.step`) and
the batch in numpy first (`Novelty.within`, then `quiet`), by batch size: where the two cost
the same is the stream's `_BATCH_RANGES`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from agent.model import online as online_model
from agent.model.novelty import Novelty, NoveltyParams
from agent.model.online import OnlineParams
from agent.model.profile import ProfileParams
from agent.model.stream import Stream, StreamParams
from trainer.streaming import DEFAULT_STREAM

WINDOW = 20


def per_window(stream: Stream, n: int, batch: int, sensors: int) -> float:
    rng = np.random.default_rng(0)
    raw = rng.random(n).astype(np.float32)
    windows = rng.normal(size=(n, WINDOW, sensors)).astype(np.float32)
    times = 1_704_067_200.0 + 60.0 * np.arange(n)  # a reading a minute
    best = float("inf")
    for _ in range(5):
        state = stream.new_state()
        start = time.perf_counter()
        for a in range(0, n, batch):
            stream.step(state, raw[a : a + batch], windows[a : a + batch], times[a : a + batch])
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def numpy_call() -> float:
    a = np.ones(2)
    start = time.perf_counter()
    for _ in range(100_000):
        a * a  # the cost of the call is what is measured
    return (time.perf_counter() - start) / 100_000 * 1e6


def features() -> None:
    """Both ways of computing a batch's features, µs per batch (best of 7 runs of 2,000)."""
    print(f"one small numpy call: {numpy_call():.2f} us")
    print("sensors window batch readings  plain  numpy (us per batch)")
    for sensors, window, batch in [
        (1, 20, 1), (1, 40, 1), (1, 64, 1), (1, 96, 1), (2, 20, 1), (2, 32, 1), (2, 40, 1),
        (3, 20, 1), (8, 5, 1), (8, 8, 1), (8, 10, 1), (8, 20, 1), (1, 20, 2), (1, 20, 3),
    ]:  # fmt: skip
        plain, numpy = _features_costs(sensors, window, batch)
        readings = sensors * window * batch
        print(f"{sensors:7} {window:6} {batch:5} {readings:8} {plain:6.2f} {numpy:6.2f}")


def _features_costs(sensors: int, window: int, batch: int) -> tuple[float, float]:
    windows = np.random.default_rng(0).normal(size=(batch, window, sensors)).astype(np.float32)
    columns = windows.transpose(0, 2, 1).tolist()
    if sensors == 1:
        total, numpy = online_model._pairwise, online_model._pairwise_features
    else:
        total, numpy = online_model._sequential, online_model._sequential_features

    def plain() -> None:
        [online_model._plain_features(c, window, total) for c in columns]

    def quiet_numpy() -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            numpy(windows)

    return _best(plain), _best(quiet_numpy)


def ranges() -> None:
    """Both ways of a batch's novelty checks, µs per batch (best of 7 runs of 2,000)."""
    print(f"one small numpy call: {numpy_call():.2f} us")
    print("sensors batch  python  numpy (us per batch)")
    for sensors in (1, 8):
        for batch in (1, 4, 8, 12, 16, 24, 32, 64):
            python, numpy = _ranges_costs(sensors, batch)
            print(f"{sensors:7} {batch:5} {python:7.2f} {numpy:6.2f}")


def _ranges_costs(sensors: int, batch: int) -> tuple[float, float]:
    """Readings of N(0, 1) inside ranges of ±4: the common case."""
    novelty = Novelty(NoveltyParams(low=[-4.0] * sensors, high=[4.0] * sensors), sensors)
    newest = np.random.default_rng(0).normal(size=(batch, sensors)).astype(np.float32)
    readings, state = newest.tolist(), novelty.new_state()

    def python() -> None:
        for reading in readings:
            novelty.step(state, reading)

    def numpy() -> None:
        checks = novelty.within(state, newest)
        for ok, reading in zip(checks, readings, strict=True):
            (novelty.quiet if ok else novelty.step)(state, reading)

    return _best(python), _best(numpy)


def _best(run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(2000):
            run()
        best = min(best, (time.perf_counter() - start) / 2000 * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", action="store_true", help="time the features' two ways")
    parser.add_argument("--ranges", action="store_true", help="time the novelty checks' two ways")
    args = parser.parse_args()
    if args.features:
        features()
        return
    if args.ranges:
        ranges()
        return
    print(f"one small numpy call: {numpy_call():.2f} us")
    for batch in (1, 64, 1024):
        stream = Stream(StreamParams(method="likelihood", baseline_weight=100), WINDOW, 1)
        cost = per_window(stream, 20_000, batch, 1)
        print(f"likelihood, batch {batch:>4}: {cost:6.2f} us/window")
    for sensors in (1, 8):
        online = OnlineParams(
            mean=[0.0] * (2 * sensors), scale=[1.0] * (2 * sensors), threshold=1.0, spread=1.0
        )
        params = StreamParams(method="online", baseline_weight=100, online=online)
        # Range novelty over readings of N(0, 1) inside a training range of ±4 (a reading
        # leaves it now and then): the common case, each sensor's two comparisons.
        novelty = NoveltyParams(low=[-4.0] * sensors, high=[4.0] * sensors)
        profile = ProfileParams(
            mean=[0.0] * sensors,
            spread=[1.0] * sensors,
            median=1.0,
            scale=2.0,
            baseline_mean=-1.5,
            baseline_std=0.5,
            baseline_weight=100,
        )
        plain = Stream(params, WINDOW, sensors)
        novel = Stream(params.model_copy(update={"novelty": novelty}), WINDOW, sensors)
        both = {"novelty": novelty, "profile": profile}
        full = Stream(params.model_copy(update=both), WINDOW, sensors)
        tail = ("tail_quantile", "tail_step", "tail_cap", "tail_climb")
        gate = {**both, **{k: DEFAULT_STREAM[k] for k in tail}}  # the default's gate
        gated = Stream(params.model_copy(update=gate), WINDOW, sensors)
        for batch in (1, 64, 1024):
            cost = per_window(plain, 10_000, batch, sensors)
            print(f"online, {sensors} sensor(s), batch {batch:>4}: {cost:6.2f} us/window")
            cost = per_window(novel, 10_000, batch, sensors)
            print(f"  + range novelty, batch {batch:>4}: {cost:6.2f} us/window")
            cost = per_window(full, 10_000, batch, sensors)
            print(f"  + daily profile, batch {batch:>4}: {cost:6.2f} us/window")
            cost = per_window(gated, 10_000, batch, sensors)
            print(f"  + tail gate, batch {batch:>4}: {cost:6.2f} us/window")


if __name__ == "__main__":
    main()
