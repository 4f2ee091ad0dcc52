"""`edge-agent`: run the agent, validate a config, score a CSV offline, inspect the buffer.

A thin shell over the library. Exit codes: 0 done; 1 the command failed at run time;
2 bad arguments, config, model or input file (the message names what is wrong).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

from agent import signals
from agent.config import (
    IDENTIFIER_PATTERN,
    IDENTIFIER_RULE,
    AgentConfig,
    BrokerConfig,
    ConfigError,
    load_config,
    parse_host_port,
)
from agent.export import ExportError, export_readings, vacuum
from agent.ingest import parse_ts
from agent.logs import configure
from agent.model.manifest import ModelFileError
from agent.model.offline import score_table
from agent.model.score import Scorer
from agent.model.table import TableError, read_table
from agent.pushes import (
    FleetState,
    abandon_pending,
    discard_invalid,
    load_effective,
    recover_interrupted,
)
from agent.store import StorageUnavailable, open_existing, reset_asset
from agent.validate import check_runnable

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
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

    score = sub.add_parser("score", help="score a CSV offline; prints `score,anomaly` per row")
    score.add_argument("model", type=Path, help="ONNX model exported by edge-trainer")
    score.add_argument("data", type=Path, help="CSV with the model's sensor columns")

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


def _load(args: argparse.Namespace, state: FleetState | None = None) -> tuple[AgentConfig, Scorer]:
    """The config, its model and its secrets, each checked, as `run` would use them."""
    config = load_effective(args.config, overrides_from(args), state)
    return config, check_runnable(config, args.config)


def _run(args: argparse.Namespace) -> int:
    from agent.notify import Notifier
    from agent.runtime import Agent, Reload

    # Installed again in case the CLI was entered another way than `edge-agent`.
    signals.install()
    stop, hup = signals.stop, signals.reload
    configure("info")
    if recover_interrupted(load_config(args.config, overrides_from(args)).storage.data_dir):
        log.error("a pushed version died in its health check; rolled back to the previous one")
    for dropped in discard_invalid(args.config, overrides_from(args), save=True)[1]:
        log.error("%s; running the previous version", dropped)
    config, scorer = _load(args)
    configure(config.log_level, config.log_format)
    current = _fingerprint(config, scorer)
    source = (args.config, overrides_from(args))

    def load_again() -> AgentConfig | None:
        """SIGHUP: the config file (and the model and secrets it names) checked as at start;
        None keeps the running config."""
        nonlocal current
        try:
            new, new_scorer = _load(args)
        except (ConfigError, ModelFileError, OSError) as exc:
            log.error("reload rejected, still running the previous config: %s", exc)
            return None
        if _fingerprint(new, new_scorer) == current:
            log.info("reload: config, model and secrets unchanged")
            return None
        log.info("reload: applying the new config (the pipeline restarts in place)")
        return new

    notifier = Notifier()
    agent = Agent(config, notifier, source)
    before: AgentConfig | None = None  # what ran before a switch, while the switch starts
    while True:
        try:
            next_config = agent.run(stop, Reload(hup, load_again))
        except (ConfigError, OSError, ValueError, sqlite3.Error) as exc:
            if agent.started or before is None:
                raise
            config, before = before, None
            agent = _fall_back(agent.config, config, notifier, source, exc)
            current = _fingerprint(config, agent.scorer)
            continue
        before = None
        if next_config is None or stop.is_set():
            return 0
        try:
            candidate = Agent(next_config, notifier, source)
        # ValueError too: anything that fails to build the new pipeline (a pydantic model
        # among them) rolls back with its reason; none may end the process (issue 13).
        except (ConfigError, ModelFileError, OSError, ValueError, sqlite3.Error) as exc:
            agent = _fall_back(next_config, config, notifier, source, exc)
            continue
        before, agent, config = config, candidate, next_config
        current = _fingerprint(config, candidate.scorer)
        configure(config.log_level, config.log_format)


def _fall_back(
    failed: AgentConfig,
    previous: AgentConfig,
    notifier: object,
    source: tuple[Path, dict[str, Any]],
    exc: Exception,
) -> object:
    """A new config that validated but could not start: back to the one that ran."""
    from agent.runtime import Agent

    log.error("the new config could not start (%s); back to the previous one", exc)
    abandon_pending(failed.storage.data_dir, f"could not start: {exc}")
    configure(previous.log_level, previous.log_format)
    return Agent(previous, notifier, source)  # type: ignore[arg-type]


def _fingerprint(config: AgentConfig, scorer: Scorer) -> tuple[object, ...]:
    """What a reload compares: the config, the model, and the files its secrets are in (a
    renewed certificate or rotated password under the same path is a change)."""
    files = [*config.fleet.trusted_keys]
    for broker in (config.local, config.upstream):
        files.append(broker.password_file)
        if broker.tls is not None:
            files += [broker.tls.ca_file, broker.tls.cert_file, broker.tls.key_file]
    digests = tuple(
        hashlib.sha256(Path(f).read_bytes()).hexdigest() if f and Path(f).is_file() else None
        for f in files
    )
    return config, scorer.manifest.graph_sha256, digests


def _check_config(args: argparse.Namespace) -> int:
    state, dropped = discard_invalid(args.config, overrides_from(args), save=False)
    for line in dropped:  # what `run` will do; the pre-start check must not fail on it
        print(f"edge-agent: warning: {line}; run will use the previous version", file=sys.stderr)
    config, scorer = _load(args, state)
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
    threshold = scorer.manifest.alert_threshold
    scores = score_table(scorer, table)
    out = sys.stdout
    out.write("score,anomaly\n")
    for score in scores:
        out.write(",0\n" if score is None else f"{score:.6f},{int(score >= threshold)}\n")
    return 0


def _buffer(args: argparse.Namespace) -> int:
    if args.buffer_command == "export":
        n = export_readings(
            args.data_dir, args.out, args.asset, args.since, args.until, args.with_scores
        )
        print(f"edge-agent: wrote {n} readings to {args.out}", file=sys.stderr)
        return 0
    if args.buffer_command == "vacuum":
        print(json.dumps(vacuum(args.data_dir)))
        return 0
    store = open_existing(args.data_dir)
    try:
        print(json.dumps(store.stats()))
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
