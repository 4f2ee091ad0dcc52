"""Micro-benchmark of the stream layer (#15): microseconds per window, by method and batch size.

    python -m scripts.bench_stream

Prints the best of 5 runs per case, beside the cost of one small numpy call on this machine
at the time (a busy machine slows both alike; the ratio travels better than the figure).
"""

from __future__ import annotations

import time

import numpy as np

from agent.model.novelty import NoveltyParams
from agent.model.online import OnlineParams
from agent.model.profile import ProfileParams
from agent.model.stream import Stream, StreamParams

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


def main() -> None:
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
        gate = {**both, "tail_quantile": 0.995, "tail_step": 0.05, "tail_cap": 8.0}
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
