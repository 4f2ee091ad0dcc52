"""NAB's protocol on our detectors, in one process, through the agent's own scoring path.

For each series: train on its probationary rows only (the first 15 %, at most 750; nothing after
them reaches the trainer), then score every row once, in order, as the gateway would
(`agent.model.offline.score_table`, windows and the streaming layer included); rows before the
first window fills score 0. The product's output is its alerts, so the detector's output NAB
sees is trainer.readout's: a detection where an alert episode fires, with its score, 0 elsewhere.
NAB's scorer then optimises one threshold per detector and profile over the whole corpus. A
series that cannot be trained or scored is reported with its reason and counted as never
alerting (what NAB's null detector scores on it), so one bad file does not abort the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.model.offline import score_table
from agent.model.score import Scorer
from trainer.nab.corpus import Corpus, Series, load_corpus
from trainer.nab.results import write_results
from trainer.nab.score import (
    PROFILES,
    corpus_totals,
    normalised,
    optimise,
    probationary_rows,
    score_at,
)
from trainer.readout import nab_detections
from trainer.train import ExportError, TrainOptions, train_values

log = logging.getLogger(__name__)

# NAB's scoreboard, normalised standard profile, full 58-file corpus.
PUBLISHED_STANDARD = {
    "ARTime": 74.9,
    "Numenta HTM": 70.1,
    "CAD OSE": 69.9,
    "KNN CAD": 58.0,
    "Relative entropy": 54.6,
    "Windowed Gaussian": 39.7,
    "Random": 16.8,
    "Null": 0.0,
}


@dataclass(frozen=True)
class SeriesScores:
    scores: np.ndarray  # one per row: the alert episodes' detections (trainer.readout)
    failure: str | None  # why the series counts as never alerting


def series_scores(series: Series, algorithm: str, window: int | None) -> SeriesScores:
    """Train on the probationary rows, score all rows in order; a failure is named, not raised."""
    probation = probationary_rows(len(series.values))
    options = TrainOptions(
        sensors=["value"],
        algorithm=algorithm,
        train_rows=probation,
        window=window,
        model_id=f"nab-{algorithm}",
    )
    try:
        times = series.table.times()
        trained = train_values(
            series.values[:probation, None],
            ["value"],
            options,
            series.name,
            times=None if times is None else times[:probation],
        )
        scorer = Scorer.from_bytes(trained.model_bytes, Path(series.name))
        scores = np.array([0.0 if s is None else s for s in score_table(scorer, series.table)])
    except (ExportError, ValueError, ArithmeticError) as exc:
        return _failed(series, algorithm, f"{type(exc).__name__}: {exc}")
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        return _failed(series, algorithm, f"{bad} scores are not finite")
    return SeriesScores(nab_detections(scores, scorer.manifest.alert_threshold), None)


def _failed(series: Series, algorithm: str, reason: str) -> SeriesScores:
    log.warning("nab: %s on %s failed (never alerting): %s", algorithm, series.name, reason)
    return SeriesScores(np.zeros(len(series.values)), reason)


def run(
    root: Path,
    algorithms: list[str],
    window: int | None = None,
    progress: Callable[[str], None] | None = None,
    scores_dir: Path | None = None,
) -> dict[str, object]:
    """Every algorithm over the corpus; a JSON-ready result with the per-file scores. With
    `scores_dir`, each row's score is written there as NAB's result files."""
    corpus = load_corpus(root)
    return {
        "corpus": {
            "root": str(root),
            "files": len(corpus.series),
            "windows": len(corpus.scoring.window_file),
        },
        "algorithms": {
            a: run_algorithm(corpus, a, window, progress, scores_dir) for a in algorithms
        },
        "published_standard": PUBLISHED_STANDARD,
    }


def run_algorithm(
    corpus: Corpus,
    algorithm: str,
    window: int | None = None,
    progress: Callable[[str], None] | None = None,
    scores_dir: Path | None = None,
) -> dict[str, object]:
    started = time.monotonic()
    runs: dict[str, SeriesScores] = {}
    for i, (name, series) in enumerate(corpus.series.items(), start=1):
        if progress:
            progress(f"nab: {algorithm} {i}/{len(corpus.series)} {name}")
        runs[name] = series_scores(series, algorithm, window)
    seconds = time.monotonic() - started
    scores = {name: r.scores for name, r in runs.items()}
    if scores_dir is not None:
        write_results(scores_dir, corpus, algorithm, scores)
    files: dict[str, dict[str, object]] = {
        name: {
            "rows": len(series.values),
            "probation": probationary_rows(len(series.values)),
            "windows": len(series.windows),
            "failed": runs[name].failure,
        }
        for name, series in corpus.series.items()
    }
    profiles = {p: _profile_result(corpus, scores, p, files) for p in PROFILES}
    failed = sum(1 for r in runs.values() if r.failure)
    return {"profiles": profiles, "files": files, "failed": failed, "seconds": seconds}


def _profile_result(
    corpus: Corpus, scores: dict[str, np.ndarray], profile: str, files: dict[str, dict]
) -> dict[str, object]:
    """The optimised threshold, the total and each category at it; each file's score at it is
    added to `files`."""
    best = optimise(corpus.scoring, scores, profile)
    at_best = score_at(corpus.scoring, scores, best.threshold, profile)
    for name, f in at_best.files.items():
        files[name][profile] = {"raw": f.raw, "tp": f.tp, "tn": f.tn, "fp": f.fp, "fn": f.fn}
    categories = {}
    for category, names in corpus.categories().items():
        raw = sum(at_best.files[n].raw for n in names)
        categories[category] = {
            "files": len(names),
            "raw": raw,
            "normalised": normalised(raw, corpus.scoring.subset(names), profile),
        }
    thresholds, totals = corpus_totals(corpus.scoring, scores, profile)
    return {
        "threshold": best.threshold,
        "raw": at_best.raw,
        "normalised": normalised(at_best.raw, corpus.scoring, profile),
        # rows flagged at the threshold: 0 when never alerting scores best
        "detections": sum(f.tp + f.fp for f in at_best.files.values()),
        # how close alerting at all comes, when never alerting wins
        "best_alerting": _best_alerting(thresholds, totals, corpus, profile),
        "categories": categories,
    }


def _best_alerting(
    thresholds: np.ndarray, totals: np.ndarray, corpus: Corpus, profile: str
) -> dict[str, float] | None:
    if len(totals) < 2:
        return None
    i = 1 + int(np.argmax(totals[1:]))
    return {
        "threshold": float(thresholds[i]),
        "normalised": normalised(float(totals[i]), corpus.scoring, profile),
    }


def render(results: dict) -> str:
    """Per category and in total, our normalised score per profile, beside the scoreboard."""
    corpus = results["corpus"]
    names = list(PROFILES)
    head = "".join(f"{p.removeprefix('reward_'):>12}" for p in names)
    lines = [
        f"NAB: {corpus['files']} files, {corpus['windows']} windows in {corpus['root']}; "
        "one threshold per detector and profile, optimised over the corpus",
        f"{'normalised score (100 perfect, 0 never alerting)':<50}{head}",
    ]
    for algorithm, result in results["algorithms"].items():
        failed = result["failed"]
        note = f" ({failed} files failed, scored as never alerting)" if failed else ""
        lines.append(f"ours: {algorithm}{note}")
        profiles = result["profiles"]
        for category, first in profiles[names[0]]["categories"].items():
            cells = [profiles[p]["categories"][category] for p in names]
            label = f"  {category} ({first['files']} files)"
            if first["normalised"] is None:
                label += " raw, no windows"
                row = "".join(f"{c['raw']:>12.2f}" for c in cells)
            else:
                row = "".join(_normalised_cell(c["normalised"]) for c in cells)
            lines.append(f"{label:<50}{row}")
        total = "".join(_normalised_cell(profiles[p]["normalised"]) for p in names)
        lines.append(f"{'  total':<50}{total}")
        thresholds = "".join(_threshold_cell(profiles[p]) for p in names)
        lines.append(f"{'  threshold (never: none beats never alerting)':<50}{thresholds}")
        if any(profiles[p]["detections"] == 0 for p in names):
            alerting = "".join(_alerting_cell(profiles[p]) for p in names)
            lines.append(f"{'  best total of a threshold that alerts':<50}{alerting}")
        for name, f in result["files"].items():
            if f["failed"]:
                lines.append(f"  failed: {name}: {f['failed']}")
    lines.append("published (NAB scoreboard, all 58 files, standard profile):")
    for name, score in results["published_standard"].items():
        lines.append(f"{'  ' + name:<50}{score:>12.1f}")
    return "\n".join(lines)


def _threshold_cell(profile: dict) -> str:
    return f"{'never':>12}" if profile["detections"] == 0 else f"{profile['threshold']:>12.4f}"


def _alerting_cell(profile: dict) -> str:
    best = profile["best_alerting"]
    return _normalised_cell(None if best is None else best["normalised"])


def _normalised_cell(value: float | None) -> str:
    """A corpus without windows has no normalised score (perfect equals never alerting)."""
    return f"{'-':>12}" if value is None else f"{value:>12.1f}"
