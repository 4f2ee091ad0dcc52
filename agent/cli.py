"""`edge-agent`: run the agent, validate a config, score a CSV offline, inspect the buffer.

A thin shell over the library. Exit codes: 0 done; 1 the command failed at run time;
2 bad arguments, config, model or input file (the message names what is wrong).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

from agent import jsontext
from agent.atomic import replacing
from agent.config import (
    IDENTIFIER_PATTERN,
    IDENTIFIER_RULE,
    BrokerConfig,
    ConfigError,
    parse_host_port,
)
from agent.export import ExportError, export_readings, vacuum
from agent.ingest import parse_ts
from agent.logs import configure
from agent.model.manifest import ModelFileError
from agent.model.score import Scorer
from agent.model.score_csv import write_scores
from agent.model.table import TableError, read_table
from agent.pushes import discard_invalid, load_effective
from agent.store.commands import open_existing, reset_asset
from agent.store.errors import StorageUnavailable
from agent.supervisor import load_runnable, run_agent
from agent.version import version_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line("edge-agent"))
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent (logs on stderr)")
    run.add_argument("--config", required=True, type=Path, help="agent config file (TOML)")
    _add_overrides(run)

    check = sub.add_parser("check-config", help="validate a config and its model; exit 0 or 2")
    check.add_argument("config", type=Path, help="agent config file (TOML)")
    _add_overrides(check)

    doctor = sub.add_parser(
        "doctor", help="check config, model, brokers, disk and clock; say how to fix; exit 0 or 1"
    )
    doctor.add_argument("config", type=Path, help="agent config file (TOML)")
    _add_overrides(doctor)

    score = sub.add_parser(
        "score", help="score a CSV offline; prints `TIME,score,anomaly,graph_score` per row"
    )
    score.add_argument("model", type=Path, help="ONNX model exported by edge-trainer")
    score.add_argument("data", type=Path, help="CSV with the model's sensor columns")
    score.add_argument(
        "--out",
        type=Path,
        help="write the CSV to this file (atomically) instead of stdout; TIME is the data's "
        "time column (or `row`, the row number, when it has none)",
    )

    buffer = sub.add_parser("buffer", help="inspect the agent's SQLite buffer")
    buffer_sub = buffer.add_subparsers(dest="buffer_command", required=True)
    stats = buffer_sub.add_parser("stats", help="counts as one JSON object")
    stats.add_argument("--data-dir", required=True, type=Path, help="the agent's data dir")
    export = buffer_sub.add_parser(
        "export", help="stored readings to CSV for `edge-trainer train` (safe while running)"
    )
    export.add_argument("--data-dir", required=True, type=Path, help="the agent's data dir")
    export.add_argument("--out", required=True, type=Path, help="CSV file to write")
    export.add_argument("--asset", help="only this asset")
    export.add_argument("--since", type=_time, help="from this time (unix seconds or ISO 8601)")
    export.add_argument("--until", type=_time, help="before this time (unix seconds or ISO 8601)")
    export.add_argument("--with-scores", action="store_true", help="add score and level columns")
    vacuum = buffer_sub.add_parser(
        "vacuum", help="give evicted space back to the disk (may pause a running agent briefly)"
    )
    vacuum.add_argument("--data-dir", required=True, type=Path, help="the agent's data dir")

    reset = sub.add_parser(
        "reset-asset",
        help="forget one asset's window, episode and clock (a running agent within 1 s)",
    )
    reset.add_argument("--config", required=True, type=Path, help="agent config file (TOML)")
    reset.add_argument("asset", type=_asset, help="the asset, as in its readings topic")
    _add_overrides(reset)
    return parser


def _asset(text: str) -> str:
    if not re.fullmatch(IDENTIFIER_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an asset name ({IDENTIFIER_RULE})")
    return text


def _time(text: str) -> float:
    """A command-line time: unix seconds or ISO 8601 with a time zone."""
    try:
        value: object = float(text)
    except ValueError:
        value = text
    parsed = parse_ts(value)
    if isinstance(parsed, str):
        raise argparse.ArgumentTypeError(parsed)
    return parsed


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", metavar="HOST:PORT", help="override local.host / local.port")
    p.add_argument("--upstream", metavar="HOST:PORT", help="override upstream.host / upstream.port")
    p.add_argument("--model", type=Path, help="override model.path")
    p.add_argument("--device-id", help="override device.id")
    p.add_argument("--data-dir", type=Path, help="override storage.data_dir")
    p.add_argument(
        "--group", action="append", metavar="G", help="override fleet.groups (repeatable)"
    )
    p.add_argument(
        "--trusted-key",
        action="append",
        type=Path,
        metavar="PATH",
        help="override fleet.trusted_keys: a public key whose pushes to trust (repeatable)",
    )


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line overrides as dotted config keys; paths are relative to the working dir."""
    out: dict[str, Any] = {}
    for flag, section in (("broker", "local"), ("upstream", "upstream")):
        if getattr(args, flag):
            host, port = parse_host_port(getattr(args, flag))
            out[f"{section}.host"], out[f"{section}.port"] = host, port
    if args.model:
        out["model.path"] = str(args.model.resolve())
    if args.device_id:
        out["device.id"] = args.device_id
    if args.data_dir:
        out["storage.data_dir"] = str(args.data_dir.resolve())
    if args.group:
        out["fleet.groups"] = list(args.group)
    if args.trusted_key:
        out["fleet.trusted_keys"] = [str(p.resolve()) for p in args.trusted_key]
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure("warning")
    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, ModelFileError, TableError, ExportError, FileNotFoundError) as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"edge-agent: error: not a usable agent database: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    return run_agent(args.config, overrides_from(args))


def _check_config(args: argparse.Namespace) -> int:
    state, dropped = discard_invalid(args.config, overrides_from(args), save=False)
    for line in dropped:  # what `run` will do; the pre-start check must not fail on it
        print(f"edge-agent: warning: {line}; run will use the previous version", file=sys.stderr)
    config, scorer = load_runnable(args.config, overrides_from(args), state)
    m = scorer.manifest
    print(
        f"ok: device {config.device.id}; model {m.model_id} v{m.version} "
        f"({m.algorithm.name}, {len(m.sensors)} sensors, window {m.window}); "
        f"local {_describe(config.local)}; upstream {_describe(config.upstream)}; "
        f"data {config.storage.data_dir}"
    )
    return 0


def _describe(broker: BrokerConfig) -> str:
    """Where and how the agent connects; a password shows only where it comes from."""
    parts = [f"{broker.host}:{broker.port}"]
    if broker.tls is not None:
        ca = broker.tls.ca_file or "system CAs"
        cert = f", client cert {broker.tls.cert_file}" if broker.tls.cert_file else ""
        parts.append(f"TLS>={broker.tls.min_version} (CA {ca}{cert})")
    if broker.username:
        source = broker.password_file or (broker.password_env and f"${broker.password_env}")
        secret = f", password from {source} (redacted)" if source else ""
        parts.append(f"user {broker.username}{secret}")
    return " ".join(parts)


def _score(args: argparse.Namespace) -> int:
    scorer = Scorer.load(args.model)
    table = read_table(args.data)
    if args.out is None:
        write_scores(scorer, table, sys.stdout)
        return 0
    with replacing(args.out, "w", newline="", encoding="utf-8") as out:
        rows = write_scores(scorer, table, out)
    print(f"edge-agent: wrote {rows} scores to {args.out}", file=sys.stderr)
    return 0


def _buffer(args: argparse.Namespace) -> int:
    if args.buffer_command == "export":
        n = export_readings(
            args.data_dir, args.out, args.asset, args.since, args.until, args.with_scores
        )
        print(f"edge-agent: wrote {n} readings to {args.out}", file=sys.stderr)
        return 0
    if args.buffer_command == "vacuum":
        print(jsontext.dumps(vacuum(args.data_dir)))
        return 0
    store = open_existing(args.data_dir)
    try:
        print(jsontext.dumps(store.stats()))
    finally:
        store.close()
    return 0


def _reset_asset(args: argparse.Namespace) -> int:
    data_dir = load_effective(args.config, overrides_from(args)).storage.data_dir
    try:
        found = reset_asset(data_dir, args.asset)
    except StorageUnavailable as exc:
        print(f"edge-agent: error: cannot reset {args.asset}: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(f"edge-agent: asset {args.asset!r} has no state in {data_dir}", file=sys.stderr)
        return 1
    print(
        f"edge-agent: reset {args.asset}: its next reading starts a new window and clock "
        "(a running agent takes this within a second)"
    )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import diagnose

    failed = 0
    for finding in diagnose(args.config, overrides_from(args)):
        print(finding.line(), flush=True)
        failed += finding.status == "FAIL"
    print(f"{failed} problem(s)" if failed else "all checks passed")
    return 1 if failed else 0


_COMMANDS = {
    "run": _run,
    "check-config": _check_config,
    "doctor": _doctor,
    "score": _score,
    "buffer": _buffer,
    "reset-asset": _reset_asset,
}
