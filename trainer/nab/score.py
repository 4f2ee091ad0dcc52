"""NAB's scoring (Lavin & Ahmad 2015), written from the paper: windows, the scaled sigmoid, the
three profiles, per-file raw scores, one threshold per detector and profile optimised over the
corpus, and the normalisation 100 * (raw - null) / (perfect - null).

How to call it (everything is numpy; a corpus is prepared once, then scored many times):

    from trainer.nab.corpus import load_corpus
    from trainer.nab.score import optimise, score_at, normalised

    nab = load_corpus(Path("../shared/data/nab"))      # reads data/ and labels/
    scores = {name: my_scores(series.values) for name, series in nab.series.items()}
    best = optimise(nab.scoring, scores, "standard")   # best.threshold, best.raw
    result = score_at(nab.scoring, scores, best.threshold, "standard")  # per-file scores
    normalised(result.raw, nab.scoring, "standard")   # 100 = perfect, 0 = never alert

Without the corpus reader: `prepare({name: layout(n_rows, [(first, last), ...]), ...})`, with
each window as an inclusive range of row indices.

`scores` maps each file's name (``category/file.csv``) to one anomaly score per row, probationary
rows included (they are not scored). For cross-validation, `nab.scoring.subset(names)` is the
same corpus restricted to some files: optimise on the training files, then `score_at` the
held-out ones with that threshold.

NAB's details, as its scorer applies them (and as the reference results confirm):
- the probationary period is the first min(floor(0.15 n), 750) rows; they are not scored;
- a row is a detection when its score >= the threshold;
- in a window [a, b] of width w, a detection at row i earns sigmoid(-(b - i + 1) / w), scaled so
  that a detection at the window's first row earns the profile's true-positive weight; only the
  window's best (earliest) detection counts; a window with no detection costs the miss weight;
- a detection outside every window costs the false-positive weight, times the scaled sigmoid
  of its distance past the preceding window, (i - b) / (w - 1), so that a detection just after
  a window costs little; before the first window, or 3 widths after one, the full weight;
- the optimiser tries every distinct score in the corpus as the threshold (and "nothing") and
  keeps the best total; of equal totals, the highest threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

PROBATION_SHARE = 0.15
PROBATION_MAX = 750
# NAB's starting threshold: above every score in [0, 1], so that nothing is flagged.
NOTHING = 1.1
# Totals equal up to float rounding are ties (the order of a sum must not pick the winner).
_TIE = 1e-9


@dataclass(frozen=True)
class Profile:
    """Weights of one application profile (true negatives carry no weight in NAB's score)."""

    tp: float
    fn: float
    fp: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(tp=1.0, fn=1.0, fp=0.11),
    "reward_low_FP_rate": Profile(tp=1.0, fn=1.0, fp=0.22),
    "reward_low_FN_rate": Profile(tp=1.0, fn=2.0, fp=0.11),
}


class ScoringError(ValueError):
    """Scores that do not fit the corpus (missing file, wrong length, not finite)."""


def probationary_rows(n_rows: int) -> int:
    """Rows a detector may learn from and that are never scored."""
    return min(math.floor(PROBATION_SHARE * n_rows), PROBATION_MAX)


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """2 * sigmoid(-5 x) - 1: +0.987 at x = -1 (window start), 0 at its end, -1 from x > 3."""
    x = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, value)


_MAX_TP = float(scaled_sigmoid(np.array(-1.0)))


@dataclass(frozen=True)
class FileLayout:
    """Per-row reward of one file, independent of the scores and of the profile.

    `reward[i]` is the unweighted sigmoid a detection at row i would earn (in a window, > 0) or
    cost (outside, <= 0); `window_of[i]` the window's index in the file, -1 outside."""

    n_rows: int
    windows: tuple[tuple[int, int], ...]
    probation: int
    reward: np.ndarray
    window_of: np.ndarray


def layout(n_rows: int, windows: Iterable[tuple[int, int]]) -> FileLayout:
    """The rewards of a file of `n_rows` rows with windows given as inclusive row ranges."""
    spans = tuple((int(a), int(b)) for a, b in windows)
    previous_end = -1
    for a, b in spans:
        if not (previous_end < a <= b < n_rows):
            raise ScoringError(
                f"window rows {a}..{b} must be in order, apart, and within {n_rows} rows"
            )
        previous_end = b
    rows = np.arange(n_rows)
    reward = np.full(n_rows, -1.0)
    window_of = np.full(n_rows, -1, dtype=np.int64)
    for k, (a, b) in enumerate(spans):
        width = b - a + 1
        inside = rows[a : b + 1]
        reward[a : b + 1] = scaled_sigmoid(-(b - inside + 1) / width)
        window_of[a : b + 1] = k
        end = spans[k + 1][0] if k + 1 < len(spans) else n_rows
        after = rows[b + 1 : end]
        # NAB divides by (width - 1): a one-row window would divide by zero; its followers then
        # cost the full weight, as rows far from any window do.
        distance = (after - b) / (width - 1) if width > 1 else np.full(len(after), np.inf)
        reward[b + 1 : end] = scaled_sigmoid(distance)
    return FileLayout(n_rows, spans, probationary_rows(n_rows), reward, window_of)


@dataclass(frozen=True)
class FileScore:
    """One file's raw score and NAB's row counts (scored rows only) at one threshold."""

    raw: float
    tp: int
    tn: int
    fp: int
    fn: int


@dataclass(frozen=True)
class CorpusScore:
    threshold: float
    raw: float
    files: dict[str, FileScore]


@dataclass(frozen=True)
class Optimum:
    threshold: float
    raw: float


@dataclass
class ScoringCorpus:
    """Files' layouts with their scored rows laid end to end, so that a corpus scores in a few
    numpy calls. Made once per corpus; `subset` for cross-validation."""

    layouts: dict[str, FileLayout]
    names: list[str] = field(init=False)
    reward: np.ndarray = field(init=False)  # scored rows only, files end to end
    window: np.ndarray = field(init=False)  # global window id, -1 outside
    file: np.ndarray = field(init=False)  # file index per scored row
    window_file: np.ndarray = field(init=False)  # file index per global window
    window_scored: np.ndarray = field(init=False)  # has the window a scored row?

    def __post_init__(self) -> None:
        self.names = list(self.layouts)
        rewards, windows, files, window_file = [], [], [], []
        for index, name in enumerate(self.names):
            lay = self.layouts[name]
            scored = slice(lay.probation, lay.n_rows)
            rewards.append(lay.reward[scored])
            local = lay.window_of[scored]
            windows.append(np.where(local >= 0, local + len(window_file), -1))
            files.append(np.full(lay.n_rows - lay.probation, index, dtype=np.int64))
            window_file.extend([index] * len(lay.windows))
        self.reward = np.concatenate(rewards) if rewards else np.zeros(0)
        self.window = np.concatenate(windows) if windows else np.zeros(0, dtype=np.int64)
        self.file = np.concatenate(files) if files else np.zeros(0, dtype=np.int64)
        self.window_file = np.array(window_file, dtype=np.int64)
        self.window_scored = np.zeros(len(window_file), dtype=bool)
        self.window_scored[self.window[self.window >= 0]] = True

    def subset(self, names: Iterable[str]) -> ScoringCorpus:
        return ScoringCorpus({name: self.layouts[name] for name in names})

    def scored_scores(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The scored rows' scores, end to end in this corpus's order; bad input is named."""
        parts = []
        for name in self.names:
            if name not in scores:
                raise ScoringError(f"no scores for {name}")
            lay = self.layouts[name]
            values = np.asarray(scores[name], dtype=np.float64)
            if values.shape != (lay.n_rows,):
                raise ScoringError(
                    f"{name}: {values.shape[0] if values.ndim == 1 else values.shape} scores "
                    f"for {lay.n_rows} rows"
                )
            if not np.all(np.isfinite(values)):
                raise ScoringError(f"{name}: scores must be finite numbers")
            parts.append(values[lay.probation :])
        return np.concatenate(parts) if parts else np.zeros(0)


def prepare(layouts: Mapping[str, FileLayout]) -> ScoringCorpus:
    """A corpus from files' layouts, for scores whose rows were read elsewhere."""
    return ScoringCorpus(dict(layouts))


def score_at(
    corpus: ScoringCorpus, scores: Mapping[str, np.ndarray], threshold: float, profile: str
) -> CorpusScore:
    """Each file's raw score and counts when every row scoring >= `threshold` is a detection."""
    weights = _profile(profile)
    flagged = corpus.scored_scores(scores) >= threshold
    n_files = len(corpus.names)
    inside = corpus.window >= 0
    false_alarms = flagged & ~inside
    fp_cost = np.bincount(
        corpus.file[false_alarms], weights=corpus.reward[false_alarms], minlength=n_files
    )
    best = np.full(len(corpus.window_file), -np.inf)
    hits = flagged & inside
    np.maximum.at(best, corpus.window[hits], corpus.reward[hits])
    per_window = np.where(np.isfinite(best), best * weights.tp / _MAX_TP, -weights.fn)
    per_window = np.where(corpus.window_scored, per_window, 0.0)
    window_sum = np.bincount(corpus.window_file, weights=per_window, minlength=n_files)
    raw = window_sum + weights.fp * fp_cost

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(corpus.file[mask], minlength=n_files)

    tp, fp = count(hits), count(false_alarms)
    fn, tn = count(~flagged & inside), count(~flagged & ~inside)
    files = {
        name: FileScore(float(raw[i]), int(tp[i]), int(tn[i]), int(fp[i]), int(fn[i]))
        for i, name in enumerate(corpus.names)
    }
    return CorpusScore(float(threshold), float(raw.sum()), files)


def optimise(corpus: ScoringCorpus, scores: Mapping[str, np.ndarray], profile: str) -> Optimum:
    """The threshold with the best corpus total, over every distinct score (and "nothing")."""
    thresholds, totals = corpus_totals(corpus, scores, profile)
    best = int(np.argmax(totals >= totals.max() - _TIE))
    return Optimum(float(thresholds[best]), float(totals[best]))


def corpus_totals(
    corpus: ScoringCorpus, scores: Mapping[str, np.ndarray], profile: str
) -> tuple[np.ndarray, np.ndarray]:
    """The corpus's raw total at every candidate threshold, highest first ("nothing" first)."""
    weights = _profile(profile)
    thresholds, sweep = threshold_sweep(corpus, scores)
    totals = (
        -weights.fn * sweep.windows
        + weights.fn * sweep.detected
        + weights.tp / _MAX_TP * sweep.tp_reward
        + weights.fp * sweep.fp_cost
    )
    return thresholds, totals


@dataclass(frozen=True)
class Sweep:
    """Profile-free parts of the corpus total at each threshold of a sweep: windows scored,
    windows detected, the sum of their best rewards, the sum of false alarms' rewards."""

    windows: int
    detected: np.ndarray
    tp_reward: np.ndarray
    fp_cost: np.ndarray


def threshold_sweep(
    corpus: ScoringCorpus, scores: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, Sweep]:
    """Every candidate threshold, highest first ("nothing" first), with the parts of the total.

    Rows are taken in descending score; each row adds its false-alarm cost, or, in a window,
    the change in that window's best reward (a window's best detection is its earliest row, so
    a running minimum of row positions per window finds it)."""
    values = corpus.scored_scores(scores)
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    window = corpus.window[order]
    outside = window < 0
    fp_step = np.where(outside, corpus.reward[order], 0.0)
    tp_step = np.zeros(len(ranked))
    detect_step = np.zeros(len(ranked))
    in_pos = np.flatnonzero(~outside)
    if len(in_pos):
        by_window = in_pos[np.lexsort((in_pos, window[in_pos]))]
        group = window[by_window]
        row = order[by_window]  # position in the corpus: earlier row = larger reward
        big = len(values) + 1
        earliest = np.minimum.accumulate(row - group * big) + group * big
        best = corpus.reward[earliest]
        first = np.ones(len(group), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        previous = np.concatenate(([0.0], best[:-1]))
        tp_step[by_window] = np.where(first, best, best - previous)
        detect_step[by_window] = first
    # The state after each run of equal scores is the state at that score as threshold.
    last_of_run = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    top = ranked[0] if len(ranked) else 0.0
    nothing = NOTHING if top < NOTHING else float(np.nextafter(top, np.inf))
    thresholds = np.concatenate(([nothing], ranked[last_of_run]))

    def swept(steps: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(steps)[last_of_run]))

    sweep = Sweep(
        windows=int(corpus.window_scored.sum()),
        detected=swept(detect_step),
        tp_reward=swept(tp_step),
        fp_cost=swept(fp_step),
    )
    return thresholds, sweep


def null_raw(corpus: ScoringCorpus, profile: str) -> float:
    """The score of a detector that never alerts: every scored window missed."""
    return -_profile(profile).fn * float(corpus.window_scored.sum())


def perfect_raw(corpus: ScoringCorpus, profile: str) -> float:
    """The score of a detector that flags each window's first row and nothing else."""
    return _profile(profile).tp * len(corpus.window_file)


def normalised(raw: float, corpus: ScoringCorpus, profile: str) -> float | None:
    """100 * (raw - null) / (perfect - null); None for a corpus without windows."""
    null, perfect = null_raw(corpus, profile), perfect_raw(corpus, profile)
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


def _profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ScoringError(f"unknown profile {name!r}; NAB's are {', '.join(PROFILES)}")
    return PROFILES[name]
