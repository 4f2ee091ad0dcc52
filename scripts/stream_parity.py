"""Whether this checkout's stream layer gives the very bits another revision's gives (#15).

    python -m scripts.stream_parity --against 740e7ae

Work on the layer's speed must not move a score: the scores feed the alert levels, and the
saved states are committed with every batch, so a last-bit difference is a different agent.
This runs the layer (agent/model/stream.py and its parts) of the checkout and of REV over the
same random streams and compares, case by case, a digest of every batch's scores, of the
state's `dump` after it and of the online model's window features. REV's `agent/` is taken
with `git archive` into a temporary directory and run there in a subprocess (this file,
copied beside it), so the two never share a module. The cases: 1, 2 and 8 sensors; windows of
5, 20 and 130 readings (numpy's order of additions changes at 8 and 128); each method with
and without range novelty, the daily profile and the tail gate; float32 and float64 windows;
readings that are NaN, ±inf, float32's largest, 1e200, -0.0 or constant; graph scores of NaN,
0 and 1; times that are NaN, ±inf, out of order, before 1970, past 2**40 s or missing;
batches of 1 to 700 windows, with a restart (dump, then load into a new layer) between some
of them. Then the awkward cases: windows of float16, long double, int64 (past 2**53), uint8,
bool and Python objects, readings exactly at and just past the novelty ranges, and NaN inside
batches, in batches of exactly 11, 12 and 13 windows (numpy checks the ranges from 12);
times as float32 and int64 arrays, with runs of equal times and steps back across an hour's
edge; and two assets stepped in turn through one layer, as the pipeline does (the layer keeps
the last time's hour).

Prints one line per case and exits 1 when any case differs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from agent.model import stream as stream_module
from agent.model.novelty import NoveltyParams
from agent.model.online import OnlineParams
from agent.model.profile import ProfileParams
from agent.model.stream import Stream, StreamParams

# Every field set, so that a change of a default elsewhere does not change a case.
LAYER = {
    "long_window": 300,
    "short_window": 8,
    "alert_z": 2.5,
    "hold": 0.5,
    "alarm_learning": 0.05,
    "min_spread": 0.5,
    "baseline_mean": -2.0,
    "baseline_std": 0.7,
    "baseline_weight": 100,
}
TAIL = {"tail_quantile": 0.99, "tail_step": 0.05, "tail_cap": 8.0}
ROWS = 1500


def _params(method: str, sensors: int, parts: str) -> StreamParams:
    extra: dict[str, object] = {}
    if method == "online":
        extra["online"] = OnlineParams(
            mean=[0.0] * sensors + [1.0] * sensors,
            scale=[1.0] * sensors + [0.3] * sensors,
            threshold=3.0,
            spread=1.5,
            learning_rate=0.01,
        )
    if "novelty" in parts:
        extra["novelty"] = NoveltyParams(
            tolerance=0.3, memory=150, low=[-2.5] * sensors, high=[2.5] * sensors
        )
    if "profile" in parts:
        extra["profile"] = ProfileParams(
            rate=0.05,
            mean=[0.0] * sensors,
            spread=[1.0] * sensors,
            median=1.0,
            scale=2.0,
            baseline_mean=-1.5,
            baseline_std=0.5,
            baseline_weight=50,
        )
    if "tail" in parts:
        extra.update(TAIL)
    return StreamParams(method=method, **LAYER, **extra)


def _rows(rng: np.random.Generator, sensors: int, dtype: type) -> np.ndarray:
    """Readings of about N(0, 1) with a level shift, spikes and wild values."""
    rows = rng.normal(0.0, 1.0, (ROWS, sensors))
    rows[ROWS // 2 :] += 4.0
    rows[rng.integers(0, ROWS, 20), rng.integers(0, sensors, 20)] *= 30.0
    rows[100:140] = 5.0  # constant: a spread of 0
    for start in range(200, ROWS, 300):
        rows[start : start + 30] = -0.0
    wild = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40]
    if dtype is np.float64:
        wild += [1e200, -1e200, 1e-310]
    for value in wild:
        rows[rng.integers(0, ROWS, 3), rng.integers(0, sensors, 3)] = value
    with np.errstate(over="ignore"):
        return rows.astype(dtype)


def _scores(rng: np.random.Generator, count: int) -> np.ndarray:
    raw = 1.0 / (1.0 + np.exp(-rng.normal(-2.0, 1.5, count)))
    raw[rng.integers(0, count, 5)] = np.nan
    raw[rng.integers(0, count, 5)] = 1.0
    raw[rng.integers(0, count, 5)] = 0.0
    return raw.astype(np.float32)


def _times(rng: np.random.Generator, count: int) -> np.ndarray:
    """Forward by a second to an hour (landing on hours' first seconds now and then), a run of
    fractions of a second across an hour's end, and times that are NaN, ±inf, ±0, a step
    back, before 1970, at and past 2**40 s, or ±1e300."""
    times = 1_704_067_200.0 + np.cumsum(rng.choice([1.0, 60.0, 300.0, 3599.0], count))
    times[rng.integers(0, count, 4)] = np.nan
    times[rng.integers(0, count, 2)] = np.inf
    run = int(rng.integers(0, count - 40))
    times[run : run + 40] = 1_704_070_800.0 - 5.0 + 0.25 * np.arange(40)
    below = np.nextafter(3600.0, 0.0)
    special = [-np.inf, -0.0, 0.0, 3600.0, below, -3600.0, -1.5, 1_704_067_200.0 - 3 * 86400.0]
    special += [2.0**40, np.nextafter(2.0**40, 0.0), 2.0**40 + 5.5 * 3600.0, 2.0**62, 1e300, -1e300]
    times[rng.integers(0, count, len(special))] = special
    return times


def _cuts(rng: np.random.Generator, count: int) -> list[int]:
    """Batch ends: runs of single windows (the live case) between larger batches."""
    cuts, at = [], 0
    while at < count:
        at = min(count, at + int(rng.choice([1, 1, 1, 2, 5, 64, 700])))
        cuts.append(at)
    return cuts


def run_case(method: str, sensors: int, window: int, parts: str, dtype: type) -> str:
    """The digest of one case's scores and states, batch by batch."""
    seed = [sensors, window, len(parts), dtype is np.float64, method == "online"]
    rng = np.random.default_rng(seed)
    rows = _rows(rng, sensors, dtype)
    windows = np.lib.stride_tricks.sliding_window_view(rows, window, axis=0).transpose(0, 2, 1)
    count = len(windows)
    raw, times = _scores(rng, count), _times(rng, count)
    timed = "untimed" not in parts
    params = _params(method, sensors, parts)
    stream = Stream(params, window, sensors)
    state = stream.new_state()
    digest = hashlib.sha256(stream.dump(state))
    start = 0
    for i, end in enumerate(_cuts(rng, count)):
        if i % 7 == 3:  # a restart: only the saved bytes carry over
            stream = Stream(params, window, sensors)
            state = stream.load(stream.dump(state))
        when = times[start:end] if timed else None
        out = stream.step(state, raw[start:end], windows[start:end], when)
        digest.update(np.asarray(out).tobytes())
        digest.update(stream.dump(state))
        if stream.model is not None:  # the online model's features, before they are rounded
            feats = stream.model.prepare(windows[start:end])
            digest.update(np.asarray(feats, dtype=np.float64).tobytes())
        start = end
    return digest.hexdigest()


def cases() -> list[tuple[str, int, int, str, type]]:
    parts = ["", "novelty", "novelty profile", "novelty profile tail", "profile untimed"]
    out = []
    for sensors in (1, 2, 8):
        for window in (5, 20, 130):
            for method in ("likelihood", "online"):
                for part in parts:
                    out.append((method, sensors, window, part, np.float32))
            out.append(("online", sensors, window, "novelty profile tail", np.float64))
    return out


# Windows' types the layer must read as their values: (name, how rows of floats become them).
KINDS = {
    "float64": lambda rows: rows,
    "float16": lambda rows: rows.astype(np.float16),
    "longdouble": lambda rows: rows.astype(np.longdouble),
    "int64": lambda rows: _with_huge(np.nan_to_num(rows * 3.0, posinf=9e18, neginf=-9e18)),
    "uint8": lambda rows: np.clip(np.nan_to_num(rows * 40.0 + 100.0), 0, 255).astype(np.uint8),
    "bool": lambda rows: rows > 0.5,
    "object": lambda rows: rows.astype(object),
}


def _with_huge(rows: np.ndarray) -> np.ndarray:
    """int64 readings with values past 2**53 (float64 cannot hold them exactly)."""
    out = rows.astype(np.int64)
    out[300:310] = 2**53 + 1
    out[310:320] = -(2**62) - 1
    return out


def _edgy_rows(rng: np.random.Generator, sensors: int) -> np.ndarray:
    """Readings of about N(0, 1.5) with a level shift, and readings exactly at the training
    ranges (±2.5), just past them, at a range a spike widened and a float64 step past that
    (a value float32 rounds up), -0.0, subnormals and NaN."""
    rows = rng.normal(0.0, 1.5, (ROWS, sensors))
    rows[ROWS // 2 :] += 3.0
    edges = [2.5, -2.5, np.nextafter(2.5, 3.0), np.nextafter(-2.5, -3.0), -0.0, 1e-310, np.nan]
    for k in range(300):
        rows[rng.integers(0, ROWS), rng.integers(0, sensors)] = edges[k % len(edges)]
    spike = 4.0000003  # float32 holds it as 4.00000048
    rows[600:620] = spike  # widens the ranges, then sits at their new edge
    rows[620:630] = np.nextafter(spike, 5.0)  # a float64 step past it
    rows[630:640] = -spike
    rows[640:652] = np.nan  # a batch of 12 with NaN in every window's newest reading
    return rows


def _awkward_times(rng: np.random.Generator, count: int) -> np.ndarray:
    """Whole seconds forward, with runs of equal times and steps back across an hour's
    edge."""
    times = 1_704_070_790.0 + np.cumsum(rng.choice([0.0, 1.0, 7.0, 3599.0, -3601.0], count))
    times[100:140] = times[100]  # equal
    times[200:240] = 1_704_074_400.0 + 20.0 - np.arange(40.0)  # back across 02:00
    return times


def run_awkward_case(method: str, sensors: int, parts: str, kind: str) -> str:
    """The digest of two assets' scores and states, stepped in turn through one layer in
    batches of 11, 12 and 13 windows (and one), with a restart every few rounds."""
    window = 5
    rng = np.random.default_rng([sensors, len(parts), len(kind), method == "online"])
    params = _params(method, sensors, parts)
    assets = []
    for _ in range(2):
        rows = _edgy_rows(rng, sensors)
        made = KINDS[kind](rows) if kind in KINDS else rows.astype(np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(made, window, axis=0)
        count = len(windows)
        times = _awkward_times(rng, count)
        if kind == "float32 times":
            times = times.astype(np.float32)
        elif kind == "int64 times":
            times = times.astype(np.int64)
        assets.append((_scores(rng, count), windows.transpose(0, 2, 1), times))
    stream = Stream(params, window, sensors)
    states = [stream.new_state() for _ in assets]
    digest = hashlib.sha256()
    start, sizes = 0, [11, 12, 13, 1, 12]
    for i, size in enumerate(itertools.cycle(sizes)):
        if start >= count:
            break
        if i % 9 == 8:  # a restart: only the saved bytes carry over
            stream = Stream(params, window, sensors)
            states = [stream.load(stream.dump(state)) for state in states]
        for state, (raw, windows, times) in zip(states, assets, strict=True):
            end = start + size
            out = stream.step(state, raw[start:end], windows[start:end], times[start:end])
            digest.update(np.asarray(out).tobytes())
            digest.update(stream.dump(state))
        start += size
    return digest.hexdigest()


def awkward_cases() -> list[tuple[str, int, str, str]]:
    kinds = [*KINDS, "float32 times", "int64 times"]
    return [
        (method, sensors, parts, kind)
        for method in ("likelihood", "online")
        for sensors in (1, 3)
        for parts in ("novelty", "novelty profile tail")
        for kind in kinds
    ]


def digests() -> dict[str, str]:
    result = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for method, sensors, window, parts, dtype in cases():
            name = f"{method} {sensors}s W{window} [{parts}] {np.dtype(dtype).name}"
            result[name] = run_case(method, sensors, window, parts, dtype)
        for method, sensors, parts, kind in awkward_cases():
            name = f"{method} {sensors}s W5 [{parts}] {kind}, two assets, batches 11-13"
            result[name] = run_awkward_case(method, sensors, parts, kind)
    return result


def against(rev: str) -> dict[str, str]:
    """The digests of revision `rev`'s layer, run in a subprocess from its own agent/."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", rev, "agent"], cwd=root, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        runner = Path(tmp) / "stream_parity_run.py"
        shutil.copy(__file__, runner)
        done = subprocess.run(
            [sys.executable, str(runner), "--digests"],
            cwd=tmp,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        theirs = json.loads(done.stdout)
        if not theirs.pop("_module").startswith(tmp):
            raise RuntimeError(f"{rev}'s run did not import its own agent/")
    return theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--against", metavar="REV", help="git revision to compare with")
    group.add_argument("--digests", action="store_true", help="print this layer's digests")
    args = parser.parse_args()
    if args.digests:
        print(json.dumps({"_module": stream_module.__file__, **digests()}))
        return
    theirs, ours = against(args.against), digests()
    differ = [name for name in ours if theirs.get(name) != ours[name]]
    for name in ours:
        print(f"{'DIFFERS' if name in differ else 'same   '} {name}")
    print(f"{len(ours) - len(differ)} of {len(ours)} cases the same bits as {args.against}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
