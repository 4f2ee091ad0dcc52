"""`edge-fleet`: the operator's side — replay readings to a gateway, follow alerts upstream.

Exit codes: 0 done; 1 a broker could not be reached or did not acknowledge; 2 bad arguments or
an unreadable input file.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from agent.config import ConfigError, parse_host_port
from agent.manifest import LEVELS
from agent.table import TableError
from fleet.alerts import AlertSubscriber
from fleet.mqtt import FleetError
from fleet.replay import readings_from_csv, replay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="publish a CSV's rows as readings (QoS 1)")
    rp.add_argument("data", type=Path, help="CSV of readings (separator sniffed)")
    rp.add_argument("--broker", required=True, metavar="HOST:PORT", help="the gateway's broker")
    rp.add_argument("--device", required=True, help="device id")
    rp.add_argument("--asset", required=True, help="asset name (last topic level)")
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

    al = sub.add_parser(
        "alerts", help="print live alerts, one JSON object per line, duplicates dropped"
    )
    al.add_argument("--broker", required=True, metavar="HOST:PORT", help="the upstream broker")
    al.add_argument("--device", default="+", help="only this device (default all)")
    al.add_argument("--level", choices=LEVELS, help="only alerts at this level or higher")
    al.add_argument("--count", type=int, help="exit after this many alerts")
    al.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, TableError, ValueError) as exc:
        print(f"edge-fleet: error: {exc}", file=sys.stderr)
        return 2
    except FleetError as exc:
        print(f"edge-fleet: {exc}", file=sys.stderr)
        return 1


def _replay(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise ValueError("--batch must be at least 1")
    host, port = parse_host_port(args.broker)
    readings = readings_from_csv(args.data, args.sensors.split(",") if args.sensors else None)
    topic = f"{args.prefix}/{args.device}/readings/{args.asset}"
    sent = replay(readings, host, port, topic, rate=args.rate, batch=args.batch)
    print(f"published {sent} readings to {topic}", file=sys.stderr)
    return 0


def _alerts(args: argparse.Namespace) -> int:
    host, port = parse_host_port(args.broker)
    done = threading.Event()
    printed = 0

    def show(alert: dict) -> None:
        nonlocal printed
        print(json.dumps(alert), flush=True)
        printed += 1
        if args.count and printed >= args.count:
            done.set()

    subscriber = AlertSubscriber(
        host, port, prefix=args.prefix, device=args.device, min_level=args.level, on_alert=show
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


_COMMANDS = {"replay": _replay, "alerts": _alerts}
