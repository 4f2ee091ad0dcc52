"""`edge-fleet`: the operator's side — signed pushes, fleet status, alerts, replay.

Push configs and models to devices and groups, see what every device runs, follow alerts
upstream, replay readings to a gateway.

Exit codes: 0 done; 1 a broker could not be reached or did not acknowledge; 2 bad arguments or
an unreadable input file.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from agent import jsontext
from agent.config import BrokerConfig, ConfigError, format_errors, parse_host_port
from agent.envelope import write_keypair
from agent.model.manifest import LEVELS
from agent.model.table import TableError
from agent.version import version_line
from fleet.alerts import AlertSubscriber
from fleet.mqtt import FleetError
from fleet.push import DEFAULT_CHUNK_BYTES, fleet_status, publish_push
from fleet.replay import (
    publish_messages,
    read_stdin_table,
    readings_from_csv,
    readings_from_table,
    replay,
)
from fleet.sources import encode, load_source, sparkplug_route


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line("edge-fleet"))
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="publish a CSV's rows as readings (QoS 1)")
    rp.add_argument(
        "data",
        type=Path,
        help="CSV of readings (separator sniffed), or - to read it from stdin "
        "(e.g. piped from edge-trainer simulate --out -; at most 16 MiB)",
    )
    rp.add_argument("--broker", required=True, metavar="HOST:PORT", help="the gateway's broker")
    rp.add_argument("--device", help="device id (required unless --sparkplug)")
    rp.add_argument(
        "--asset", help="asset name, the last topic level (required unless --sparkplug)"
    )
    rp.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="readings per second (default: as fast as acknowledged)",
    )
    rp.add_argument(
        "--batch", type=int, default=1, help="readings per message; >1 sends JSON arrays"
    )
    rp.add_argument(
        "--sensors", help="comma list of columns (default: every numeric non-label column)"
    )
    rp.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    rp.add_argument(
        "--sparkplug",
        metavar="GROUP/NODE/DEVICE",
        help="publish as a Sparkplug B edge node instead (births, DDATA by alias, rebirths on "
        "request); metric names are the CSV's columns",
    )
    rp.add_argument(
        "--source-config",
        type=Path,
        metavar="FILE.toml",
        help="publish as a configured source's publishers do: the agent config (or any TOML) "
        "holding the [[ingest.sources]] entry named by --source",
    )
    rp.add_argument("--source", metavar="NAME", help="the source's name in --source-config")

    al = sub.add_parser(
        "alerts", help="print live alerts, one JSON object per line, duplicates dropped"
    )
    al.add_argument("--broker", required=True, metavar="HOST:PORT", help="the upstream broker")
    al.add_argument("--device", default="+", help="only this device (default all)")
    al.add_argument("--level", choices=LEVELS, help="only alerts at this level or higher")
    al.add_argument("--count", type=int, help="exit after this many alerts")
    al.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    al.add_argument("--json", action="store_true", help="one JSON object per line (the default)")
    al.add_argument(
        "--share",
        metavar="NAME",
        help="join the MQTT 5 shared subscription NAME: consumers of one name split the stream",
    )
    _add_security(al)
    _add_security(rp)

    kg = sub.add_parser("keygen", help="write an Ed25519 key pair for signing pushes")
    kg.add_argument("--out", required=True, type=Path, help="folder for fleet.key, fleet.pub.pem")
    kg.add_argument("--name", default="fleet", help="file name stem (default fleet)")

    for kind in ("config", "model"):
        push = sub.add_parser(f"push-{kind}", help=f"sign and push a {kind} (retained)")
        push.add_argument(
            "file",
            type=Path,
            help="config overlay (TOML)" if kind == "config" else "model (.onnx from edge-trainer)",
        )
        _add_push_options(push)
    rb = sub.add_parser("rollback", help="sign and push a rollback to the last known good")
    rb.add_argument("--kind", required=True, choices=("config", "model"), help="what to roll back")
    rb.add_argument("--to-version", type=int, help="only if the last known good is this version")
    _add_push_options(rb)

    st = sub.add_parser("status", help="every known device: online, config, model, last push")
    st.add_argument("--broker", required=True, metavar="HOST:PORT", help="the upstream broker")
    st.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    st.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    _add_security(st)
    return parser


def _add_push_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="the upstream broker")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="push to this device")
    target.add_argument("--group", help="push to every device in this group")
    p.add_argument("--key", required=True, type=Path, help="private signing key (keygen)")
    p.add_argument("--version", type=int, help="push version (default: now in unix ms)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_BYTES,
        help=f"send content above this many bytes in chunks (default {DEFAULT_CHUNK_BYTES})",
    )
    p.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    _add_security(p)


def _add_security(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    p.add_argument("--tls-ca", type=Path, metavar="PEM", help="TLS, trusting this CA")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="TLS client certificate")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-file", type=Path, help="file whose first line is the password")


def _broker(args: argparse.Namespace) -> BrokerConfig:
    """The broker and how to reach it, checked by the agent's own config model."""
    host, port = parse_host_port(args.broker)
    tls = None
    if args.tls or args.tls_ca or args.tls_cert:
        tls = {"ca_file": args.tls_ca, "cert_file": args.tls_cert, "key_file": args.tls_key}
    try:
        return BrokerConfig.model_validate(
            {
                "host": host,
                "port": port,
                "username": args.username,
                "password_file": args.password_file,
                "tls": tls,
            }
        )
    except ValidationError as exc:
        raise ConfigError(format_errors("command line", exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, TableError, ValueError, OSError) as exc:
        print(f"edge-fleet: error: {exc}", file=sys.stderr)
        return 2
    except FleetError as exc:
        print(f"edge-fleet: {exc}", file=sys.stderr)
        return 1


def _replay(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise ValueError("--batch must be at least 1")
    host, port = parse_host_port(args.broker)
    readings = _readings(args)
    if args.sparkplug:
        return _replay_sparkplug(args, readings, args.sparkplug, {})
    if (args.source_config is None) != (args.source is None):
        raise ValueError("--source-config and --source go together")
    if args.source_config is not None:
        source = load_source(args.source_config, args.source)
        if not args.asset:
            raise ValueError("--asset is required with --source-config")
        if source.format == "sparkplug_b":
            return _replay_sparkplug(args, readings, *sparkplug_route(source, args.asset))
        if args.batch != 1:
            raise ValueError("--batch is for the readings topic; a source sends as it is set up")
        messages = encode(source, args.asset, readings)
        rate = args.rate * len(messages) / max(1, len(readings))  # --rate stays per reading
        publish_messages(messages, host, port, rate, security=_broker(args))
        print(
            f"published {len(readings)} readings as {len(messages)} messages of source "
            f"{source.name!r} ({source.format})",
            file=sys.stderr,
        )
        return 0
    if not args.device or not args.asset:
        raise ValueError("--device and --asset are required (or --sparkplug)")
    topic = f"{args.prefix}/{args.device}/readings/{args.asset}"
    sent = replay(
        readings, host, port, topic, rate=args.rate, batch=args.batch, security=_broker(args)
    )
    print(f"published {sent} readings to {topic}", file=sys.stderr)
    return 0


def _readings(args: argparse.Namespace) -> list[dict[str, object]]:
    """The rows of the CSV file, or of stdin for `-`."""
    sensors = args.sensors.split(",") if args.sensors else None
    if str(args.data) != "-":
        return readings_from_csv(args.data, sensors)
    if sys.stdin.isatty():
        raise ValueError("replay -: stdin is a terminal; pipe a CSV in")
    return readings_from_table(read_stdin_table(sys.stdin.buffer), sensors)


def _replay_sparkplug(
    args: argparse.Namespace,
    readings: list[dict[str, object]],
    where: str,
    metrics: dict[str, str],
) -> int:
    """As a Sparkplug B edge node at `where` (GROUP/NODE/DEVICE), columns renamed to their
    metric names by `metrics`."""
    from fleet.sparkplug import replay_sparkplug  # needs protobuf: the `sparkplug` extra

    host, port = parse_host_port(args.broker)
    renamed = [{metrics.get(k, k): v for k, v in r.items()} for r in readings]
    sent = replay_sparkplug(renamed, host, port, where, args.rate, security=_broker(args))
    print(f"published {sent} readings as Sparkplug B {where}", file=sys.stderr)
    return 0


def _alerts(args: argparse.Namespace) -> int:
    host, port = parse_host_port(args.broker)
    done = threading.Event()
    printed = 0

    def show(alert: dict) -> None:
        nonlocal printed
        if done.is_set():  # --count reached: alerts still arriving before the close are not ours
            return
        print(jsontext.dumps(alert), flush=True)
        printed += 1
        if args.count and printed >= args.count:
            done.set()

    subscriber = AlertSubscriber(
        host,
        port,
        prefix=args.prefix,
        device=args.device,
        min_level=args.level,
        on_alert=show,
        share=args.share,
        security=_broker(args),
    )
    # After the SUBACK: from here on no alert is missed, which scripts can wait for.
    print(
        f"edge-fleet: following alerts on {subscriber.topic} at {host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
    return 0


def _keygen(args: argparse.Namespace) -> int:
    private, public = write_keypair(args.out, args.name)
    print(f"wrote {private} (keep it secret) and {public} (give it to the devices)")
    return 0


def _push(args: argparse.Namespace) -> int:
    kind = args.command.removeprefix("push-")
    if kind == "rollback":
        content = json.dumps({"kind": args.kind, "to_version": args.to_version}).encode()
    else:
        content = args.file.read_bytes()
        if kind == "model" and not content.startswith(b"\x08"):
            raise ValueError(f"{args.file}: not an ONNX model")
    target = f"device:{args.device}" if args.device else f"group:{args.group}"
    sent = publish_push(
        _broker(args),
        args.prefix,
        target,
        kind,
        content,
        args.key,
        args.version,
        args.chunk_size,
    )
    print(jsontext.dumps(sent))
    return 0


def _status(args: argparse.Namespace) -> int:
    devices = fleet_status(_broker(args), args.prefix)
    if args.json:
        print(jsontext.dumps(devices))
        return 0
    print(f"{'device':<20} {'online':<7} {'config':<14} {'model':<26} last push")
    for d in devices:
        model = d["model"]
        push = d["last_push"] or {}
        last = f"{push.get('kind', '-')} {push.get('status', '')} {push.get('reason', '')}".strip()
        print(
            f"{d['device_id']!s:<20} {'yes' if d['online'] else 'no':<7} "
            f"{d['config_version']!s:<14} {model['id']!s}@{model['version']!s:<20} {last}"
        )
    return 0


_COMMANDS = {
    "replay": _replay,
    "alerts": _alerts,
    "keygen": _keygen,
    "push-config": _push,
    "push-model": _push,
    "rollback": _push,
    "status": _status,
}
