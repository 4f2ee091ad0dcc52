"""Round 2 of #15: does a second score (after KNN CAD, after CAD OSE) beat the `online` default
on NAB under the leave-one-category-out procedure of scripts/choose_defaults.py?

    python -m scripts.explore_nab [--cache var/choose-defaults] [--families knn,context]

An experiment, not the product: the new scores are computed here in numpy, causally (each row
sees only the past), and fed to the agent's stream layer (`likelihood`) and to its episode
reading exactly as the default's score is. The candidates are the round-1 default and its
`alert_z` neighbours (`OLD_GRID`: the old) and, per family, the new score read directly,
through the layer (`LAYER_GRID`), and either of those combined with an old candidate (the
larger of the two adapted scores: an alert when either layer alerts).

Leave one NAB category out: the candidate best on the other six categories' normalised
standard score, at the threshold optimised on them, scores the held-out category; the held-out
raw scores pooled and normalised are the cross-validated figure, printed for the old candidates
alone and for old and new together (ties go to the old), then nested: each fold also chooses
which families to admit by an inner leave one category out on its six categories. Each is also
judged at the product's alert threshold 0.5. NAB only: SKAB is not run (a candidate must win
NAB first). The graph scores come from scripts/choose_defaults.py's cache (made on its first
run). Results and what we drew on: docs/detection.md, "Round 2".

`knn` (Burnaev and Ishimtsev, arXiv:1608.04585, read for the idea): a point is the last `embed`
means of `step` readings; its nonconformity the mean distance to its `k` nearest among the last
`reference` points that do not overlap it; the score 1 − its conformal p-value among the last
`calibration` nonconformities. `context` (after CAD OSE's learnt contexts; our own, simpler):
the share of the last 1..m tokens (bucketed readings) never seen before.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections import deque
from pathlib import Path

import numpy as np

from agent.model.stream import Stream, StreamParams
from scripts.choose_defaults import Judge, Series, adapted, cached_series, load_nab_scorer
from trainer.readout import episodes

log = logging.getLogger("explore_nab")

THRESHOLD = 0.5
OLD_GRID = {
    "alert_z": (2.0, 2.5, 3.0),
    "long_window": (250,),
    "short_window": (8,),
    "alarm_learning": (0.15,),
    "hold": (2.0,),
    "learning_rate": (0.001,),
}
KNN_GRID = {
    "embed": (30,),
    "step": (4,),
    "k": (3,),
    "reference": (300,),
    "calibration": (300, 1000, 3000),
    "warmup": (100,),
}
CONTEXT_GRID = {"buckets": (8, 16, 32), "orders": ((1, 2, 3), (2, 4, 6))}
LAYER_GRID = {"alert_z": (1.0, 1.5), "short_window": (3, 8), "long_window": (250,)}


def values_of(series: Series) -> np.ndarray:
    """The file's readings, from its cached windows [n_windows, W, 1]."""
    w = series.windows[:, :, 0].astype(np.float64)
    return np.concatenate([w[0], w[1:, -1]])


def knn_score(
    values: np.ndarray,
    embed: int,
    step: int,
    k: int,
    reference: int,
    calibration: int,
    warmup: int,
) -> np.ndarray:
    """1 − conformal p-value per row (0 until the reference set holds k points); each point is
    `embed` means of `step` readings (the last embed x step readings, downsampled). It scores
    0 until `warmup` nonconformities calibrate the p-value."""
    if step > 1:
        means = np.convolve(values, np.ones(step) / step, mode="full")[: len(values)]
        return _knn(means, embed, step, k, reference, calibration, warmup)
    return _knn(values, embed, 1, k, reference, calibration, warmup)


def _knn(
    values: np.ndarray,
    embed: int,
    step: int,
    k: int,
    reference: int,
    calibration: int,
    warmup: int,
) -> np.ndarray:
    n = len(values)
    span = embed * step
    out = np.zeros(n)
    refs = np.zeros((reference, embed))
    held = 0
    cursor = 0
    cal: deque[float] = deque(maxlen=calibration)
    pending: deque[np.ndarray] = deque()
    for i in range(span - 1, n):
        point = values[i - span + step : i + 1 : step]
        if held >= k:
            d = np.sqrt(((refs[:held] - point) ** 2).sum(axis=1))
            ncm = float(np.partition(d, k - 1)[:k].mean())
            if len(cal) >= warmup:
                larger = sum(1 for c in cal if c >= ncm)
                out[i] = 1.0 - (larger + 1) / (len(cal) + 1)
            cal.append(ncm)
        pending.append(point)
        if len(pending) > span:  # only points that do not overlap the current one
            refs[cursor] = pending.popleft()
            cursor = (cursor + 1) % reference
            held = min(held + 1, reference)
    return out


def layer(series: Series, row_scores: np.ndarray, settings: dict) -> np.ndarray:
    """The agent's `likelihood` layer over a per-row score, seeded from the probation rows."""
    W = series.window
    raw = np.clip(row_scores[W - 1 :], 1e-6, 1 - 1e-6)
    logits = np.log(raw / (1 - raw))
    seed = logits[: max(1, series.first_scored - W + 1)]
    params = StreamParams(
        method="likelihood",
        baseline_mean=float(seed.mean()),
        baseline_std=float(seed.std()),
        baseline_weight=min(len(seed), int(settings["long_window"])),
        hold=0.0,
        alarm_learning=0.15,
        **settings,
    )
    stream = Stream(params, W, 1)
    out = np.zeros(series.n_rows)
    out[W - 1 :] = stream.step(stream.new_state(), raw.astype(np.float32), series.windows)
    return out


def detections(scores: np.ndarray) -> np.ndarray:
    read = episodes(scores, THRESHOLD)
    return np.where(read.fires, scores, 0.0)


def grid(spec: dict) -> list[dict]:
    return [dict(zip(spec, v, strict=True)) for v in itertools.product(*spec.values())]


def context_score(values: np.ndarray, first: int, buckets: int, orders: tuple[int, ...]):
    """Per row, the share of `orders` whose context is new, smoothed into (0, 1): (new + 0.5)
    / (len(orders) + 1). A reading is a token, its bucket among `buckets` equal steps of the
    range of the first `first` readings (levels beyond it are new tokens); the context of order
    m is the last m tokens. Seen contexts are kept as bits of a table of 2^16 (bounded: a
    collision at worst hides a new context)."""
    lo, hi = float(values[:first].min()), float(values[:first].max())
    width = (hi - lo) / buckets if hi > lo else max(abs(lo) * 1e-3, 1e-9)
    tokens = np.clip(np.floor((values - lo) / width), -(10**6), 10**6).astype(np.int64).tolist()
    size = 1 << 16
    seen = bytearray(size)
    out = np.zeros(len(values))
    longest = max(orders)
    for i in range(longest - 1, len(values)):
        new = 0
        for m in orders:
            slot = hash((m, *tokens[i - m + 1 : i + 1])) % size
            if not seen[slot]:
                new += 1
                seen[slot] = 1
        out[i] = (new + 0.5) / (len(orders) + 1)
    return out


def family(nab, name, rows, old, configs, outcomes, spec: dict) -> None:
    """A new per-row score `rows` as candidates: read directly, through the layer, and each
    combined with every old candidate (the larger adapted score: either layer alerting)."""
    configs.append({"detector": name, "layer": "none", **spec})
    outcomes.append({s.name: detections(rows[s.name]) for s in nab})
    for z, theirs in old.items():
        configs.append({"detector": f"online+{name}", "layer": "none", "online_alert_z": z, **spec})
        outcomes.append({n: detections(np.maximum(v, theirs[n])) for n, v in rows.items()})
    for settings in grid(LAYER_GRID):
        configs.append({"detector": name, "layer": "likelihood", **spec, **settings})
        mine = {s.name: layer(s, rows[s.name], settings) for s in nab}
        outcomes.append({n: detections(v) for n, v in mine.items()})
        for z, theirs in old.items():
            configs.append({"detector": f"online+{name}", "online_alert_z": z, **spec, **settings})
            outcomes.append({n: detections(np.maximum(v, theirs[n])) for n, v in mine.items()})


def candidates(
    nab: list[Series], families: list[str]
) -> tuple[list[dict], list[dict[str, np.ndarray]]]:
    configs, outcomes = [], []
    old = {}
    for settings in grid(OLD_GRID):
        configs.append({"detector": "online", **settings})
        old[settings["alert_z"]] = {s.name: adapted(s, settings) for s in nab}
        outcomes.append({n: detections(v) for n, v in old[settings["alert_z"]].items()})
    for knn in grid(KNN_GRID) if "knn" in families else []:
        log.info("knn %s", knn)
        rows = {s.name: knn_score(values_of(s), **knn) for s in nab}
        family(nab, "knn", rows, old, configs, outcomes, knn)
    for spec in grid(CONTEXT_GRID) if "context" in families else []:
        log.info("context %s", spec)
        rows = {s.name: context_score(values_of(s), s.first_scored, **spec) for s in nab}
        family(nab, "context", rows, old, configs, outcomes, spec)
    return configs, outcomes


def cross_validate(
    judge: Judge, groups: dict, outcomes: list, among: list[int], fixed: float | None
) -> tuple:
    """Leave one category out among the candidates `among`: (pooled normalised score, per
    fold the candidate chosen, its threshold and the held-out category's normalised score).
    `fixed`: judge at this threshold instead of NAB's optimised one."""
    names = [n for held in groups.values() for n in held]
    pooled, folds = 0.0, {}
    for group, held in groups.items():
        rest = [n for n in names if n not in held]
        best = max(among, key=lambda i: normalised(judge, outcomes[i], rest, fixed))
        threshold, raw = at(judge, outcomes[best], rest, held, fixed)
        pooled += raw
        folds[group] = (best, threshold, judge.nab_normalised(raw, held))
    return judge.nab_normalised(pooled, names), folds


def at(judge: Judge, outcome: dict, fit: list[str], on: list[str], fixed: float | None):
    """(threshold, raw standard score of `on`): the threshold optimised on `fit`, or `fixed`."""
    if fixed is None:
        return judge.nab(_Out(outcome), fit, on)
    scored = judge.ns.score_at(judge.corpus.subset(on), outcome, fixed, "standard")
    return fixed, scored.raw


_MEMO: dict[tuple, float] = {}


def normalised(judge: Judge, outcome: dict, on: list[str], fixed: float | None = None) -> float:
    """NAB's normalised standard score on files `on` (at the threshold optimised on them)."""
    key = (id(outcome), tuple(on), fixed)
    if key not in _MEMO:
        _, raw = at(judge, outcome, on, on, fixed)
        _MEMO[key] = judge.nab_normalised(raw, on)
    return _MEMO[key]


def nested(judge: Judge, groups: dict, outcomes: list, sets: dict, fixed: float | None) -> tuple:
    """Leave one category out, choosing the candidate set too: in each fold, the set (old, old
    + one family, old + all) with the best leave-one-category-out score on the other six
    categories, then its best candidate on those six scores the held-out one. A procedure that
    chooses among the families without looking at the held-out category."""
    names = [n for held in groups.values() for n in held]
    pooled, folds = 0.0, {}
    for group, held in groups.items():
        inner = {g: v for g, v in groups.items() if g != group}
        rest = [n for n in names if n not in held]
        label = max(sets, key=lambda k: cross_validate(judge, inner, outcomes, sets[k], fixed)[0])
        best = max(sets[label], key=lambda i: normalised(judge, outcomes[i], rest, fixed))
        threshold, raw = at(judge, outcomes[best], rest, held, fixed)
        pooled += raw
        folds[group] = (label, best, threshold, judge.nab_normalised(raw, held))
    return judge.nab_normalised(pooled, names), folds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("var/choose-defaults"))
    parser.add_argument(
        "--families", default="knn,context", help="new scores to try (comma-separated)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    series = cached_series(args.data, args.cache, "online")
    nab = [s for s in series if s.labels is None and s.raw is not None]
    judge = Judge(nab, load_nab_scorer(None))
    configs, outcomes = candidates(nab, args.families.split(","))
    groups: dict[str, list[str]] = {}
    for s in nab:
        groups.setdefault(s.group, []).append(s.name)
    names = [s.name for s in nab]
    old = [i for i, c in enumerate(configs) if c["detector"] == "online"]
    runs = itertools.product((None, THRESHOLD), (("old", old), ("old+new", range(len(configs)))))
    for fixed, (label, among) in runs:
        score, folds = cross_validate(judge, groups, outcomes, list(among), fixed)
        how = "NAB's optimised threshold" if fixed is None else f"threshold {fixed}"
        print(f"{label} candidates, {how}: cross-validated NAB standard {score:6.1f}")
        for group, (best, threshold, held) in folds.items():
            shown = "  -  " if held is None else f"{held:5.1f}"
            print(f"  {group:<28} {shown} at {threshold:.4f} {configs[best]}")
    sets = {"old": old}
    for name in args.families.split(","):
        sets[f"old+{name}"] = old + [i for i, c in enumerate(configs) if name in c["detector"]]
    if len(sets) > 2:
        sets["old+all"] = list(range(len(configs)))
    for fixed in (None, THRESHOLD):
        score, folds = nested(judge, groups, outcomes, sets, fixed)
        how = "NAB's optimised threshold" if fixed is None else f"threshold {fixed}"
        print(f"nested (candidate set chosen per fold), {how}: cross-validated {score:6.1f}")
        for group, (label, best, threshold, held) in folds.items():
            shown = "  -  " if held is None else f"{held:5.1f}"
            print(f"  {group:<28} {shown} {label} at {threshold:.4f} {configs[best]}")
    shown: dict[tuple, int] = {}
    for i in sorted(range(len(configs)), key=lambda i: -normalised(judge, outcomes[i], names)):
        family = (configs[i]["detector"], configs[i].get("layer"))
        shown[family] = shown.get(family, 0) + 1
        if shown[family] <= 3:
            score = normalised(judge, outcomes[i], names)
            per = [
                judge.nab_normalised(judge.nab(_Out(outcomes[i]), names, held)[1], held)
                for held in groups.values()
            ]
            cats = " ".join("  -  " if p is None else f"{p:5.1f}" for p in per)
            print(f"in-sample {score:6.1f} [{cats}] {configs[i]}")
    print("categories: " + ", ".join(groups))
    return 0


class _Out:
    """Judge.nab reads `.nab`; here an outcome is just the NAB detections."""

    def __init__(self, nab: dict[str, np.ndarray]) -> None:
        self.nab = nab


if __name__ == "__main__":
    sys.exit(main())
