"""`make demo`: the whole path on this machine, ending by itself with a summary.

simulate training data → train a detector → two private brokers (the gateway's and a stand-in
upstream) → the agent as a real process between them → a day of readings with injected faults
→ alerts printed as they arrive upstream → stop → how the alerts line up with the faults.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from fleet.alerts import AlertSubscriber
from fleet.replay import readings_from_csv, replay
from testbed.launch import StatusWatch, configure_agent, wait_for
from testbed.mosquitto import BrokerError, Mosquitto
from trainer.simulate import Fault, simulate, write_csv
from trainer.train import TrainOptions, train, write_model

OUT = Path("demo-output")
DEVICE, ASSET, WINDOW, INTERVAL = "gw-demo", "pump-1", 10, 60.0
FAULTS = ["spike", "drift", "stuck", "noise"]


def main(argv: list[str] | None = None) -> int:
    # No options: the parser gives `--help` (which must not start a demo that wipes
    # demo-output/) and refuses anything else by name.
    argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    step("1/5 simulating a pump gateway: 4000 clean readings to train on, a day with 4 faults")
    write_csv(OUT / "train.csv", *simulate(4000, [], seed=1, interval=INTERVAL))
    stamps, values, faults = simulate(1440, FAULTS, seed=7, interval=INTERVAL)
    write_csv(OUT / "live.csv", stamps, values, faults)
    for f in faults:
        print(
            f"      injected {f.label:<22} rows {f.start}-{f.end - 1} "
            f"({stamps[f.start][11:16]} UTC)"
        )

    step("2/5 training the default detector (online) and exporting it as one ONNX file")
    # The default detector and stream settings (docs/detection.md), with a window of 10
    # readings, ten minutes of the simulated pump.
    options = TrainOptions(window=WINDOW, model_id="demo_pump", seed=42)
    result = train(OUT / "train.csv", options)
    model = write_model(result, OUT / "demo_pump.onnx")
    print(
        f"      {model} ({len(result.model_bytes) // 1024} KiB), parity error "
        f"{result.manifest.parity.max_abs_error:.1e}"
    )

    step("3/5 starting two private mosquitto brokers and the agent between them")
    local, upstream = Mosquitto(OUT / "local-broker"), Mosquitto(OUT / "upstream-broker")
    try:
        local.start()
        upstream.start()
    except BrokerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        local.stop()
        return 1
    try:
        return run_agent(local, upstream, model, stamps, faults)
    finally:
        local.stop()
        upstream.stop()


def run_agent(
    local: Mosquitto, upstream: Mosquitto, model: Path, stamps: list[str], faults: list[Fault]
) -> int:
    print(f"      local broker {local.address}, upstream broker {upstream.address}")
    # Paths relative to the config's folder, as a user would write them.
    agent = configure_agent(
        OUT, local, upstream, Path(model.name), data_dir=Path("agent-data"), device=DEVICE
    )
    status = StatusWatch(upstream.port, DEVICE, lambda s: s.get("state") == "online")
    alerts = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE, on_alert=show_alert)
    agent.start()
    try:
        if not status.seen.wait(30):
            print("demo: the agent did not come online; see demo-output/agent.log", file=sys.stderr)
            return 1
        online_s = time.perf_counter() - agent.started_at
        print(f"      agent online after {online_s:.2f}s (log: {agent.log})")
        step("4/5 replaying the day's 1440 readings at 300/s; alerts as they arrive upstream:")
        readings = readings_from_csv(OUT / "live.csv")
        replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/{ASSET}", rate=300)
        stats = wait_for(
            lambda: _settled(agent.stats(), len(readings)),
            60,
            f"{len(readings)} readings stored and every alert acknowledged upstream",
            poll=0.2,
        )
    finally:
        code = agent.stop()
        alerts.close()
        status.close()
    step("5/5 summary")
    print(summarize(alerts.alerts, faults, stamps, stats, code))
    return 0 if code == 0 else 1


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show_alert(alert: dict) -> None:
    print(
        f"      [{alert['ts'][11:16]}] {alert['state']:<8} {alert['level']:<8} {alert['message']}",
        flush=True,
    )


def _settled(stats: dict, expected: int) -> dict:
    """The stats once every reading is stored and every alert acknowledged upstream, else {}."""
    if not stats or stats["readings"] + stats["dead_letters"] < expected:
        return {}
    return {} if stats["alerts_pending"] else stats


def summarize(
    alerts: list[dict], faults: list[Fault], stamps: list[str], stats: dict, code: int | None
) -> str:
    epoch = [_ts(s) for s in stamps]
    firing = [a for a in alerts if a["state"] == "firing"]
    episodes = {a["episode_start"]: a for a in firing}
    lines, detected, matched = [], [], set()
    for f in faults:
        lo, hi = epoch[f.start], epoch[min(f.end - 1 + WINDOW, len(epoch) - 1)]
        hits = [start for start in episodes if lo <= _ts(start) <= hi]
        if hits:
            delay = round((_ts(hits[0]) - lo) / INTERVAL)
            lines.append(
                f"      {f.label:<22} detected, episode starts {delay} readings in "
                f"({episodes[hits[0]]['level']})"
            )
            detected.append(f.kind)
            matched.update(hits)
        else:
            lines.append(f"      {f.label:<22} missed")
    false_alarms = len(episodes) - len(matched)
    lines.append(
        f"      readings stored {stats['readings']}, dead letters {stats['dead_letters']}, "
        f"alerts delivered {stats['alerts_delivered']}, agent exit code {code}"
    )
    lines.append(
        f"demo: {len(alerts)} alerts ({len(episodes)} episodes) from {stats['readings']} readings; "
        f"{len(detected)}/{len(faults)} injected faults detected "
        f"({', '.join(detected) or 'none'}), "
        f"{false_alarms} false alarm{'s' if false_alarms != 1 else ''}"
    )
    return "\n".join(lines)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


if __name__ == "__main__":
    sys.exit(main())
