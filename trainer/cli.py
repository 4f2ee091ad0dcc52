"""`edge-trainer`: simulate data and train detectors. A thin shell over `trainer.train`.

Exit codes: 0 done; 1 the command failed (export refused); 2 bad arguments or unreadable input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent import jsontext
from agent.logs import configure
from agent.model.manifest import ModelFileError
from agent.model.table import TableError
from agent.version import version_line
from trainer import benchmark
from trainer.buffer_db import parse_time
from trainer.detectors import DEFAULT_ALGORITHM, DETECTORS
from trainer.evaluate import evaluate
from trainer.features import DEFAULT_FEATURES, FEATURES
from trainer.simulate import FAULT_KINDS, parse_faults, simulate, write_csv, write_rows
from trainer.train import (
    ExportError,
    TrainOptions,
    TrainResult,
    train,
    train_from_db,
    write_model,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line("edge-trainer"))
    parser.add_argument("--log-level", default="warning", help="stderr log level (default warning)")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate", help="write simulated pump-gateway readings with labelled faults"
    )
    sim.add_argument(
        "--out",
        required=True,
        type=Path,
        help="CSV file to write, or - for stdout (the summary goes to stderr), e.g. to pipe "
        "into edge-fleet replay -",
    )
    sim.add_argument("--rows", required=True, type=int, help="number of readings")
    sim.add_argument(
        "--faults",
        default="none",
        help="comma list of faults to inject, each once or KIND:COUNT; kinds: "
        + ", ".join(f"{k} ({v})" for k, v in FAULT_KINDS.items())
        + "; 'none' for clean data",
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument(
        "--interval", type=float, default=60.0, help="seconds between readings (default 60)"
    )

    ev = sub.add_parser(
        "evaluate", help="score labelled data through the agent's path; metrics as JSON"
    )
    _judged_on(
        ev, "CSV with the model's sensors and a label column", "0/1 column: 1 marks an anomaly"
    )

    rp = sub.add_parser(
        "report", help="one self-contained HTML page of a model's scores on a CSV, with pictures"
    )
    _judged_on(
        rp,
        "CSV with the model's sensors",
        "0/1 column: adds the confusion matrix and precision-recall curve",
        label_required=False,
    )
    rp.add_argument("--out", required=True, type=Path, help="HTML file to write")
    rp.add_argument("--top", type=int, default=5, help="alerts whose contributions are drawn")

    bm = sub.add_parser("benchmark", help="run a published benchmark's protocol")
    bm_sub = bm.add_subparsers(dest="benchmark", required=True)
    skab = bm_sub.add_parser(
        "skab", help="SKAB: fit on each file's first rows, pool F1/FAR/MAR, beside published"
    )
    skab.add_argument("folder", type=Path, help="SKAB's data folder (e.g. ../shared/data/skab)")
    skab.add_argument(
        "--algorithm",
        action="append",
        choices=sorted(DETECTORS),
        help="detector to run (repeatable; default all)",
    )
    skab.add_argument("--train-rows", type=int, default=400, help="rows fitted per file")
    skab.add_argument(
        "--window", type=int, help="readings per window (default: each detector's own)"
    )
    skab.add_argument("--json", action="store_true", help="JSON instead of a table")
    nab = bm_sub.add_parser(
        "nab",
        help="NAB: fit on each series' probationary rows, score in order, NAB's scorer",
    )
    nab.add_argument(
        "folder", type=Path, help="NAB's folder with data/ and labels/ (e.g. ../shared/data/nab)"
    )
    nab.add_argument(
        "--algorithm",
        action="append",
        choices=sorted(DETECTORS),
        help=f"detector to run (repeatable; default {DEFAULT_ALGORITHM})",
    )
    nab.add_argument(
        "--window", type=int, help="readings per window (default: each detector's own)"
    )
    nab.add_argument(
        "--json", action="store_true", help="JSON (with every file's scores) instead of a table"
    )
    nab.add_argument(
        "--scores-dir",
        type=Path,
        help="also write each row's score there, laid out as NAB's result files",
    )

    tr = sub.add_parser(
        "train",
        help="train a detector on a CSV or an agent's buffer database; export one ONNX file",
    )
    tr.add_argument("data", type=Path, nargs="?", help="CSV of readings (separator sniffed)")
    tr.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    db = tr.add_argument_group(
        "from an agent's buffer database (instead of DATA)",
        "one asset's readings in [--since, --until), its alert episodes and a window of "
        "readings around each left out; read-only, safe beside a running agent",
    )
    db.add_argument(
        "--from-db", type=Path, help="the agent's database file (agent.db) or its data dir"
    )
    db.add_argument("--asset", help="the asset whose readings to fit (required with --from-db)")
    db.add_argument("--since", help="from this time (ISO 8601, UTC unless a zone is given)")
    db.add_argument("--until", help="before this time (ISO 8601, UTC unless a zone is given)")
    tr.add_argument(
        "--sensors",
        help="comma list of sensor columns (default: every numeric "
        "column except the timestamp and label columns)",
    )
    tr.add_argument(
        "--algorithm",
        default=DEFAULT_ALGORITHM,
        choices=sorted(DETECTORS),
        help=f"detector (default {DEFAULT_ALGORITHM}: a z-score whose normal model keeps "
        "learning on the gateway)",
    )
    tr.add_argument(
        "--members",
        help="for ensemble / ensemble_vote: comma list of two or more detectors "
        "(default zscore,gaussian_mixture)",
    )
    tr.add_argument(
        "--contamination",
        type=float,
        default=0.01,
        help="share of training windows scored above the alert threshold (default 0.01)",
    )
    tr.add_argument(
        "--window",
        type=int,
        help="readings per window (default: the detector's; 20 for zscore and online, 10 for "
        "the others)",
    )
    tr.add_argument(
        "--threshold-factor",
        type=float,
        help="alert threshold = training median + F x (contamination quantile - median) "
        "(default: the detector's; 3 for zscore and online, 1 for the others)",
    )
    tr.add_argument("--train-rows", type=int, help="fit only on the first N rows")
    tr.add_argument(
        "--label-column", help="0/1 label column: excluded from sensors, used for metrics"
    )
    tr.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    tr.add_argument(
        "--features",
        help=f"comma list of window features from {list(FEATURES)} (default: the detector's; "
        f"mean,std,min,max for zscore, {','.join(DEFAULT_FEATURES)} for the others)",
    )
    tr.add_argument("--model-id", help="model id in the manifest (default: the output file's stem)")
    tr.add_argument(
        "--model-version", default="1", help="model version in the manifest (default 1)"
    )
    tr.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _judged_on(
    parser: argparse.ArgumentParser, data_help: str, label_help: str, label_required: bool = True
) -> None:
    """The arguments `evaluate` and `report` share: a model, the data, labels, a start row."""
    parser.add_argument("model", type=Path, help="ONNX model exported by edge-trainer")
    parser.add_argument("data", type=Path, help=data_help)
    parser.add_argument("--label-column", required=label_required, help=label_help)
    parser.add_argument(
        "--from-row", type=int, default=0, help="count only rows from this one (0-based)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_level)
    try:
        return _COMMANDS[args.command](args)
    except (TableError, ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"edge-trainer: error: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"edge-trainer: export refused: {exc}", file=sys.stderr)
        return 1


def _simulate(args: argparse.Namespace) -> int:
    if args.rows < 1:
        raise ValueError("--rows must be positive")
    stamps, values, faults = simulate(
        args.rows, parse_faults(args.faults), args.seed, args.interval
    )
    placed = ", ".join(f"{f.label} rows {f.start}-{f.end - 1}" for f in faults) or "no faults"
    if str(args.out) != "-":
        write_csv(args.out, stamps, values, faults)
        print(f"wrote {args.out}: {args.rows} rows, {placed}")
        return 0
    try:
        write_rows(sys.stdout, stamps, values, faults)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped (its own error says why); Python would complain again when it
        # flushes stdout at exit, so stdout points at /dev/null from here on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("edge-trainer: error: stdout closed before the CSV was written", file=sys.stderr)
        return 1
    _say(f"wrote {args.rows} rows to stdout, {placed}")
    return 0


def _train(args: argparse.Namespace) -> int:
    options = TrainOptions(
        sensors=args.sensors.split(",") if args.sensors else None,
        algorithm=args.algorithm,
        contamination=args.contamination,
        window=args.window,
        train_rows=args.train_rows,
        label_column=args.label_column,
        seed=args.seed,
        features=[f.strip() for f in args.features.split(",") if f.strip()]
        if args.features is not None
        else None,
        threshold_factor=args.threshold_factor,
        model_id=args.model_id or args.out.stem,
        model_version=args.model_version,
        members=[m.strip() for m in args.members.split(",") if m.strip()] if args.members else None,
    )
    result = _fit(args, options)
    write_model(result, args.out)
    summary = result.summary()
    if args.json:
        print(jsontext.dumps({"out": str(args.out), **summary}))
        return 0
    m = result.manifest
    print(
        f"wrote {args.out} ({len(result.model_bytes) / 1024:.0f} KiB): {m.algorithm.name} on "
        f"{len(m.sensors)} sensors ({', '.join(m.sensor_names)}), window {m.window}, "
        f"{m.training.windows} training windows from {m.training.rows} rows"
    )
    print(
        f"alert threshold {m.alert_threshold} (contamination {m.contamination}); "
        f"parity max error {m.parity.max_abs_error:.1e} (tolerance {m.parity.tolerance:.0e})"
    )
    metrics = ", ".join(f"{k} {v:.3g}" for k, v in m.training.metrics.items())
    print(f"metrics: {metrics}")
    return 0


def _fit(args: argparse.Namespace, options: TrainOptions) -> TrainResult:
    """From DATA, or from --from-db: exactly one of them."""
    if (args.data is None) == (args.from_db is None):
        raise ValueError("give either DATA (a CSV) or --from-db DATABASE, not both or neither")
    if args.from_db is None:
        if args.asset or args.since or args.until:
            raise ValueError("--asset, --since and --until go with --from-db")
        return train(args.data, options, progress=_say)
    if not args.asset:
        raise ValueError("--from-db needs --asset (the asset whose readings to fit)")
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if since is not None and until is not None and not since < until:
        raise ValueError(f"--since {args.since} is not before --until {args.until}")
    result, data = train_from_db(args.from_db, args.asset, since, until, options, _say)
    _say(
        f"{data.in_range} readings of {args.asset} in the range, {len(data.ts)} kept after "
        f"leaving out {data.episodes} alert episode(s)"
    )
    return result


def _say(line: str) -> None:
    """Progress on stderr, so that stdout stays the summary (or its JSON)."""
    print(f"edge-trainer: {line}", file=sys.stderr, flush=True)


def _evaluate(args: argparse.Namespace) -> int:
    print(jsontext.dumps(evaluate(args.model, args.data, args.label_column, args.from_row)))
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ValueError("--top must be at least 1")
    from trainer import report  # matplotlib is only needed here

    page = report.build(args.model, args.data, args.label_column, args.from_row, args.top)
    report.write(page, args.out)
    print(f"wrote {args.out} ({len(page.encode()) / 1024:.0f} KiB)")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    if args.benchmark == "nab":
        return _benchmark_nab(args)
    algorithms = args.algorithm or sorted(DETECTORS)
    results = benchmark.run(args.folder, algorithms, args.train_rows, args.window)
    print(jsontext.dumps(results) if args.json else benchmark.render(results))
    return 0


def _benchmark_nab(args: argparse.Namespace) -> int:
    from trainer.nab import run as nab

    algorithms = args.algorithm or [DEFAULT_ALGORITHM]
    results = nab.run(args.folder, algorithms, args.window, _say, args.scores_dir)
    print(jsontext.dumps(results) if args.json else nab.render(results))
    return 0


_COMMANDS = {
    "simulate": _simulate,
    "train": _train,
    "evaluate": _evaluate,
    "benchmark": _benchmark,
    "report": _report,
}
