"""One window scored at a time, per detector, two versions side by side (issue 15: ≤ 20 µs).

    python -m bench.score_pairs --save DIR              # train every detector, keep the files
    python -m bench.score_pairs --baseline DIR          # those files against today's export
    python -m bench.score_pairs --baseline DIR --baseline-scorer OLD_SCORE.py

On a shared machine the figure of one run moves by more than a change is worth, so the two
versions are timed in the same process, block by block in alternating order (A B, B A, …), and
each run gives both a median and a p99; the table shows the range over the runs. Version A is
the files in `--baseline` (models exported by older code) scored by `--baseline-scorer` (an
older `agent/model/score.py`, loaded under another name) or by today's `Scorer`; version B is
today's export, trained on the same simulated pump data as `make bench`, scored by today's
`Scorer`. Without `--baseline` only B is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.model.score import Scorer
from agent.model.table import read_table
from bench.harness import build_models
from trainer.detectors import DETECTORS

ScoreOne = Callable[[np.ndarray], object]


def load_scorer(path: Path | None, model: Path) -> ScoreOne:
    """`score` of the model loaded by today's Scorer, or by the Scorer in the file `path`."""
    if path is None:
        return Scorer.load(model).score
    spec = importlib.util.spec_from_file_location("baseline_score", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Scorer.load(model).score


def time_block(score: ScoreOne, windows: list[np.ndarray]) -> list[float]:
    """µs per call, one window per call."""
    times = []
    for window in windows:
        start = time.perf_counter_ns()
        score(window)
        times.append((time.perf_counter_ns() - start) / 1000)
    return times


def compare(
    versions: dict[str, ScoreOne], windows: list[np.ndarray], runs: int
) -> dict[str, list[tuple[float, float]]]:
    """Per version, (median, p99) of each run; within a run the versions alternate in blocks."""
    names = list(versions)
    for name in names:  # warm-up: first calls allocate
        time_block(versions[name], windows[:200])
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    blocks = [windows[i : i + 250] for i in range(0, len(windows), 250)]
    for run in range(runs):
        samples: dict[str, list[float]] = {name: [] for name in names}
        for b, block in enumerate(blocks):
            order = names if (run + b) % 2 == 0 else names[::-1]
            for name in order:
                samples[name] += time_block(versions[name], block)
        for name in names:
            ordered = sorted(samples[name])
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            out[name].append((statistics.median(ordered), p99))
    return out


def windows_of(models: Path, model: Path, calls: int) -> list[np.ndarray]:
    table = read_table(models / "train.csv")
    data = table.matrix(table.sensor_columns()).astype(np.float32)
    w = Scorer.load(model).manifest.window
    return [np.ascontiguousarray(data[i : i + w][None]) for i in range(calls)]


def spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if round(low, 1) == round(high, 1) else f"{low:.1f}–{high:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.score_pairs", description=__doc__)
    parser.add_argument("--baseline", type=Path, help="model files exported by older code (A)")
    parser.add_argument("--baseline-scorer", type=Path, help="an older agent/model/score.py")
    parser.add_argument("--save", type=Path, help="keep today's model files in this folder")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="windows per version per run")
    parser.add_argument("--only", help="comma list of detectors (default: every one)")
    args = parser.parse_args()
    algorithms = tuple(args.only.split(",")) if args.only else tuple(sorted(DETECTORS))
    with tempfile.TemporaryDirectory(prefix="edge-score-") as tmp:
        folder = args.save or Path(tmp)
        built = build_models(folder, algorithms)
        print(
            "detector               "
            + ("A median / p99 µs       " * bool(args.baseline))
            + "B median / p99 µs",
            file=sys.stdout,
        )
        for algorithm, path in built.paths.items():
            versions = {"B": Scorer.load(path).score}
            if args.baseline:
                versions = {
                    "A": load_scorer(args.baseline_scorer, args.baseline / path.name),
                    **versions,
                }
            result = compare(versions, windows_of(folder, path, args.calls), args.runs)
            cells = [
                f"{spread([m for m, _ in result[n]]):>9} / {spread([p for _, p in result[n]]):<11}"
                for n in versions
            ]
            print(f"{algorithm:22} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
