"""Choose the one default detection configuration by cross-validation on development data (#15).

    python -m scripts.choose_defaults [--data ../shared/data] [--cache var/choose-defaults]

1. For every NAB development file (31, in 7 categories), every labelled SKAB file (valve1,
   valve2) and each candidate detector, train as each benchmark's protocol says (NAB: on the
   probationary rows, min(15 %, 750); SKAB: on the first 400 rows) and keep the graph's raw
   scores and the model's stream parameters (cached: the grid reuses them).
2. For every candidate configuration (detector x stream settings, `GRID`), run the agent's
   stream layer (agent.model.stream, the code the gateway runs) and read its output as each
   protocol reads a detector's, through the agent's alert episodes (trainer.readout): NAB
   counts a detection where an episode fires; SKAB marks a row anomalous while one is open.
   Only configurations that pass trainer.stream_checks (a normal series never fires, a slow
   drift does not flood, a level shift fires once and goes quiet, for zscore, online and pca)
   are candidates.
3. The objective of a configuration on a set of files: NAB's normalised standard score / 100
   (its threshold optimised over those NAB files, as NAB does) + SKAB's pooled F1, minus
   2 x (FAR - 12 %) / 100 when FAR is over the goal of 12 %.
4. Leave one group out over the 9 groups (7 NAB categories, 2 SKAB folders): choose the best
   configuration on the other 8, score the held-out group with it (NAB: at the threshold
   chosen on the other NAB files). The held-out figures, pooled, are the cross-validated ones;
   the default is the configuration chosen on all 9 groups, whose figures are in-sample.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from agent.model.score import Scorer
from agent.model.stream import Stream, StreamParams
from agent.model.table import read_table
from trainer import stream_checks
from trainer.features import sliding_windows
from trainer.metrics import classification_metrics
from trainer.readout import nab_detections, skab_flags
from trainer.streaming import with_settings
from trainer.train import ExportError, TrainInputError, TrainOptions, train

log = logging.getLogger("choose_defaults")

# zscore lost every fold of runs 1-2, pca every fold of runs 3-4 (docs/detection.md).
DETECTORS = ("online",)
GRID: dict[str, tuple[float | int, ...]] = {
    "alert_z": (1.5, 2.0, 2.5, 3.0),
    "long_window": (250,),
    "short_window": (8,),
    "alarm_learning": (0.05, 0.15),
    "hold": (1.0, 1.5, 2.0),
    # range novelty (agent/model/novelty.py): 0 leaves it out; 8 of 9 folds of run 11 chose
    # memory 1,280 over 320. Since run 16 on, with the daily profile (agent/model/profile.py;
    # a rate of 0 leaves it out): every fold of runs 9 to 15 chose both.
    "novelty_tolerance": (0.3,),
    "novelty_memory": (1280,),
    "profile_rate": (0.01,),
    # tail gate (agent/model/stream.py): a quantile of 0 leaves it out; a climb of 0 keeps
    # all an episode lifted
    "tail_quantile": (0.0, 0.99, 0.995),
    "tail_step": (0.02, 0.05, 0.1),
    "tail_cap": (6.0, 8.0),
    "tail_climb": (0, 20, 30, 50),
}
# The online detector's own: how fast its normal model learns.
ONLINE_GRID: dict[str, tuple[float | int, ...]] = {"learning_rate": (0.001,)}
SKAB_TRAIN_ROWS = 400
FAR_GOAL = 12.0
THRESHOLD = 0.5  # the models' alert threshold (trainer.calibration.ALERT_THRESHOLD)


@dataclass
class Series:
    """One file as its benchmark sees it."""

    group: str  # "nab/<category>" or "skab/<folder>"
    name: str
    n_rows: int
    first_scored: int  # rows before it trained the model and are not judged
    window: int = 0
    raw: np.ndarray | None = None  # graph score per full window (None: did not train)
    windows: np.ndarray | None = None  # [n_windows, W, n]
    stream: StreamParams | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)  # NAB windows, row ranges
    labels: np.ndarray | None = None  # SKAB: 0/1 per row
    times: np.ndarray | None = None  # epoch seconds per row (the daily profile's clock)


def nab_spans(stamps: list[str], spans: list[list[str]]) -> list[tuple[int, int]]:
    """NAB's windows (timestamps) as inclusive row ranges."""
    ts = np.array([s.replace(" ", "T") for s in stamps], dtype="datetime64[s]")
    rows = []
    for start, end in spans:
        a = int(np.searchsorted(ts, np.datetime64(start.replace(" ", "T")[:19]), side="left"))
        b = int(np.searchsorted(ts, np.datetime64(end.replace(" ", "T")[:19]), side="right")) - 1
        rows.append((a, b))
    return rows


def _fit(series: Series, path: Path, options: TrainOptions, values: np.ndarray) -> Series:
    try:
        result = train(path, options)
    except (ExportError, TrainInputError) as exc:
        log.warning("%s: %s does not train: %s", series.name, options.algorithm, exc)
        return series
    manifest = result.manifest
    scorer = Scorer.from_bytes(result.model_bytes, path)
    series.windows = sliding_windows(values.astype(np.float32), manifest.window)
    series.raw = scorer.score_many(series.windows).score
    series.times = read_table(path).times()
    series.stream, series.window = manifest.stream, manifest.window
    return series


def load_series(data: Path, detector: str) -> list[Series]:
    out = []
    nab = data / "nab"
    spans = json.loads((nab / "labels" / "combined_windows.json").read_text())
    for name in sorted(spans):
        path = nab / "data" / name
        table = read_table(path)
        values = table.matrix(["value"])
        n = len(values)
        probation = min(int(0.15 * n), 750)
        series = Series("nab/" + name.split("/")[0], name, n, probation)
        series.spans = nab_spans(table.timestamps(), spans[name])
        options = TrainOptions(sensors=["value"], algorithm=detector, train_rows=probation)
        out.append(_fit(series, path, options, values))
    for folder in ("valve1", "valve2"):
        for path in sorted((data / "skab" / folder).glob("*.csv"), key=lambda p: int(p.stem)):
            table = read_table(path)
            values = table.matrix(table.sensor_columns("anomaly"))
            series = Series("skab/" + folder, f"{folder}/{path.name}", len(values), SKAB_TRAIN_ROWS)
            series.labels = table.labels("anomaly")
            options = TrainOptions(
                algorithm=detector, train_rows=SKAB_TRAIN_ROWS, label_column="anomaly"
            )
            out.append(_fit(series, path, options, values))
    return out


def cached_series(data: Path, cache: Path, detector: str) -> list[Series]:
    """`load_series`, kept in `cache` (numpy arrays and JSON) across runs of the grid. Delete
    the folder when the trainer changes: the cache does not know."""
    cache.mkdir(parents=True, exist_ok=True)
    arrays, meta = cache / f"{detector}.npz", cache / f"{detector}.json"
    if not (arrays.exists() and meta.exists()):
        series = load_series(data, detector)
        kept = {}
        for i, s in enumerate(series):
            if s.raw is not None:
                kept[f"raw{i}"], kept[f"windows{i}"] = s.raw, s.windows
            if s.labels is not None:
                kept[f"labels{i}"] = s.labels
            if s.times is not None:
                kept[f"times{i}"] = s.times
        np.savez(arrays, **kept)
        meta.write_text(json.dumps([_meta(s) for s in series]))
    saved = np.load(arrays)
    out = []
    for i, m in enumerate(json.loads(meta.read_text())):
        stream = StreamParams.model_validate(m.pop("stream")) if m["stream"] else None
        m.pop("stream", None)
        s = Series(**m, stream=stream)
        s.spans = [tuple(x) for x in s.spans]
        s.raw = saved.get(f"raw{i}", None)
        s.windows = saved.get(f"windows{i}", None)
        s.labels = saved.get(f"labels{i}", None)
        s.times = saved.get(f"times{i}", None)
        out.append(s)
    return out


def _meta(s: Series) -> dict:
    return {
        "group": s.group,
        "name": s.name,
        "n_rows": s.n_rows,
        "first_scored": s.first_scored,
        "window": s.window,
        "spans": s.spans,
        "stream": s.stream.model_dump() if s.stream is not None else None,
    }


def adapted(series: Series, settings: dict[str, float | int]) -> np.ndarray:
    """The stream's score per row (0 before the first full window) under `settings`."""
    out = np.zeros(series.n_rows)
    if series.raw is None:
        return out
    params = with_settings(series.stream, settings)
    stream = Stream(params, series.window, series.windows.shape[2])
    times = None if series.times is None else series.times[series.window - 1 :]
    out[series.window - 1 :] = stream.step(stream.new_state(), series.raw, series.windows, times)
    return out


@dataclass
class Outcome:
    """What one configuration did on every file (enough to score any subset)."""

    nab: dict[str, np.ndarray]  # file -> NAB detection scores per row
    skab: dict[str, tuple[np.ndarray, np.ndarray]]  # file -> (labels, flags) on judged rows


def run_config(all_series: list[Series], settings: dict[str, float | int]) -> Outcome:
    nab, skab = {}, {}
    for s in all_series:
        scores = adapted(s, settings)
        if s.labels is None:
            nab[s.name] = nab_detections(scores, THRESHOLD)
        else:
            judged = slice(s.first_scored, s.n_rows)
            skab[s.name] = (s.labels[judged], skab_flags(scores, THRESHOLD)[judged])
    return Outcome(nab, skab)


def load_nab_scorer(path: Path | None) -> ModuleType:
    """NAB's scoring (trainer/nab/score.py); `path` loads it from another checkout."""
    if path is None:
        return importlib.import_module("trainer.nab.score")
    spec = importlib.util.spec_from_file_location("nab_score", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nab_score"] = module
    spec.loader.exec_module(module)
    return module


class Judge:
    def __init__(self, all_series: list[Series], nab_score: ModuleType) -> None:
        self.series = {s.name: s for s in all_series}
        self.ns = nab_score
        self.corpus = nab_score.prepare(
            {s.name: nab_score.layout(s.n_rows, s.spans) for s in all_series if s.labels is None}
        )

    def nab(self, out: Outcome, fit_on: list[str], judge_on: list[str]) -> tuple[float, float]:
        """(threshold optimised on `fit_on`, raw standard score of `judge_on` at it)."""
        fit = self.corpus.subset(fit_on)
        best = self.ns.optimise(fit, {n: out.nab[n] for n in fit_on}, "standard")
        judged = self.corpus.subset(judge_on)
        result = self.ns.score_at(
            judged, {n: out.nab[n] for n in judge_on}, best.threshold, "standard"
        )
        return best.threshold, result.raw

    def nab_normalised(self, raw: float, names: list[str]) -> float:
        return self.ns.normalised(raw, self.corpus.subset(names), "standard")

    @staticmethod
    def skab(out: Outcome, names: list[str]) -> dict[str, float]:
        labels = np.concatenate([out.skab[n][0] for n in names])
        flags = np.concatenate([out.skab[n][1] for n in names])
        return classification_metrics(labels, flags)

    def objective(self, out: Outcome, names: list[str]) -> float:
        nab = [n for n in names if n in out.nab]
        skab = [n for n in names if n in out.skab]
        _, raw = self.nab(out, nab, nab)
        m = self.skab(out, skab)
        penalty = 2.0 * max(0.0, m["far"] - FAR_GOAL) / 100.0
        return self.nab_normalised(raw, nab) / 100.0 + m["f1"] - penalty


def configurations() -> list[dict[str, float | int | str]]:
    out = []
    for detector in DETECTORS:
        grid = {**GRID, **(ONLINE_GRID if detector == "online" else {})}
        for values in itertools.product(*grid.values()):
            config = dict(zip(grid, values, strict=True))
            if config["hold"] >= config["alert_z"]:  # no alert ends: StreamParams refuses it
                continue
            if (
                config["novelty_tolerance"] == 0
                and config["novelty_memory"] != grid["novelty_memory"][0]
            ):
                continue  # without novelty its memory does not matter: one of them
            if config["tail_quantile"] == 0 and any(
                config[k] != grid[k][0] for k in ("tail_step", "tail_cap", "tail_climb")
            ):
                continue  # nor the tail gate's step, cap and climb without the gate
            out.append({"detector": detector, **config})
    return out


# The stream settings apply to every model: they must pass the made-up streams with these.
CHECKED_WITH = ("zscore", "online", "pca")


def feasible(configs: list[dict]) -> list[dict]:
    """The configurations that pass trainer.stream_checks (a normal series never fires, a slow
    drift does not flood, a level shift fires once and goes quiet) for every detector in
    CHECKED_WITH with the configuration's stream settings, and for its own detector."""
    made = {}
    for algorithm in CHECKED_WITH:
        result = stream_checks.trained(algorithm)
        made[algorithm] = (result, stream_checks.cases(result))
    kept = []
    for config in configs:
        settings = {k: v for k, v in config.items() if k != "detector"}
        wrong = []
        for algorithm, (result, cases) in made.items():
            mine = (
                settings
                if algorithm == config["detector"]
                else {k: v for k, v in settings.items() if k != "learning_rate"}
            )
            wrong += [f"{algorithm}: {w}" for w in stream_checks.failures(result, cases, mine)]
        if wrong:
            log.info("left out %s: %s", config, "; ".join(wrong))
        else:
            kept.append(config)
    log.info("%d of %d configurations pass the made-up streams", len(kept), len(configs))
    if not kept:
        raise SystemExit("no configuration passes the made-up streams")
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("var/choose-defaults"))
    parser.add_argument("--nab-scorer", type=Path, help="trainer/nab/score.py of another checkout")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if not (args.data / "nab").is_dir() or not (args.data / "skab").is_dir():
        print(f"choose_defaults: no nab/ and skab/ under {args.data}", file=sys.stderr)
        return 2
    ns = load_nab_scorer(args.nab_scorer)
    series = {d: cached_series(args.data, args.cache, d) for d in DETECTORS}
    judge = Judge(series[DETECTORS[0]], ns)
    configs = feasible(configurations())
    log.info("running %d configurations", len(configs))
    outcomes = []
    for config in configs:
        settings = {k: v for k, v in config.items() if k != "detector"}
        outcomes.append(run_config(series[config["detector"]], settings))
    report = cross_validate(judge, configs, outcomes, series[DETECTORS[0]])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(render(report))
    return 0


def cross_validate(
    judge: Judge, configs: list[dict], outcomes: list[Outcome], series: list[Series]
) -> dict:
    groups: dict[str, list[str]] = {}
    for s in series:
        groups.setdefault(s.group, []).append(s.name)
    everything = [n for names in groups.values() for n in names]
    nab_all = [s.name for s in series if s.labels is None]
    skab_all = [s.name for s in series if s.labels is not None]
    held_nab_raw, held_labels, held_flags, folds = 0.0, [], [], {}
    for group, names in groups.items():
        rest = [n for n in everything if n not in names]
        best = max(range(len(configs)), key=lambda i: judge.objective(outcomes[i], rest))
        out = outcomes[best]
        if group.startswith("nab/"):
            fit = [n for n in rest if n in out.nab]
            threshold, raw = judge.nab(out, fit, names)
            held_nab_raw += raw
            folds[group] = {"config": configs[best], "threshold": threshold, "raw": raw}
        else:
            held_labels += [out.skab[n][0] for n in names]
            held_flags += [out.skab[n][1] for n in names]
            folds[group] = {"config": configs[best], **judge.skab(out, names)}
    held = classification_metrics(np.concatenate(held_labels), np.concatenate(held_flags))
    cv = {
        "nab_standard": judge.nab_normalised(held_nab_raw, nab_all),
        **{f"skab_{k}": v for k, v in held.items()},
    }
    chosen = max(range(len(configs)), key=lambda i: judge.objective(outcomes[i], everything))
    out = outcomes[chosen]
    threshold, raw = judge.nab(out, nab_all, nab_all)
    in_sample = {
        "nab_standard": judge.nab_normalised(raw, nab_all),
        "nab_threshold": threshold,
        **{f"skab_{k}": v for k, v in judge.skab(out, skab_all).items()},
    }
    per_folder = {
        folder: judge.skab(out, [n for n in skab_all if n.startswith(folder)])
        for folder in ("valve1", "valve2")
    }
    per_category = {}
    for group, names in groups.items():
        if group.startswith("nab/"):
            _, raw_g = judge.nab(out, nab_all, names)
            per_category[group] = judge.nab_normalised(raw_g, names)
    return {
        "default": configs[chosen],
        "in_sample": in_sample,
        "cross_validated": cv,
        "folds": folds,
        "skab_folders": per_folder,
        "nab_categories": per_category,
    }


def render(report: dict) -> str:
    lines = [f"default: {report['default']}"]
    for kind in ("in_sample", "cross_validated"):
        m = report[kind]
        lines.append(
            f"{kind:<16} NAB standard {m['nab_standard']:6.1f}   SKAB F1 {m['skab_f1']:.3f} "
            f"FAR {m['skab_far']:5.1f} % MAR {m['skab_mar']:5.1f} %"
        )
    for group, m in report["skab_folders"].items():
        lines.append(
            f"  skab/{group:<20} F1 {m['f1']:.3f} FAR {m['far']:5.1f} % MAR {m['mar']:5.1f} %"
        )
    for group, score in report["nab_categories"].items():
        shown = "no windows" if score is None else f"{score:6.1f}"
        lines.append(f"  {group:<25} NAB standard {shown}")
    lines.append("chosen per fold (leave one group out):")
    for group, f in report["folds"].items():
        lines.append(f"  without {group:<22} {f['config']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
