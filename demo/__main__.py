"""`make demo`: the whole path on this machine, ending by itself with a summary.

simulate training data → train a detector → two private brokers (the gateway's and a stand-in
upstream) → the agent as a real process between them → a day of readings with injected faults
→ alerts printed as they arrive upstream → stop → how the alerts line up with the faults.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from agent.store import open_existing
from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from fleet.replay import readings_from_csv, replay
from testbed.mosquitto import BrokerError, Mosquitto
from trainer.simulate import Fault, simulate, write_csv
from trainer.train import TrainOptions, train, write_model

OUT = Path("demo-output")
DEVICE, ASSET, WINDOW, INTERVAL = "gw-demo", "pump-1", 10, 60.0
FAULTS = ["spike", "drift", "stuck", "noise"]


def main() -> int:
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

    step("2/5 training a PCA (T² + Q) detector and exporting it as one ONNX file")
    # PCA, not the default zscore: one load drives every simulated sensor, and the injected
    # drift breaks that relation while staying inside the sensor's daily range, which is what
    # PCA's Q sees and a per-feature distance does not (docs/training.md, Detectors).
    options = TrainOptions(algorithm="pca", window=WINDOW, model_id="demo_pump", seed=42)
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
    config = OUT / "agent.toml"
    config.write_text(
        f'[device]\nid = "{DEVICE}"\n[local]\nport = {local.port}\n'
        f"[upstream]\nport = {upstream.port}\n"
        f'[model]\npath = "{model.name}"\n[storage]\ndata_dir = "agent-data"\n'
    )
    online = threading.Event()
    status = connect(
        "127.0.0.1",
        upstream.port,
        subscribe=f"edge/{DEVICE}/status",
        on_message=lambda _c, _u, m: online.set() if b'"online"' in m.payload else None,
    )
    alerts = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE, on_alert=show_alert)
    log = (OUT / "agent.log").open("w")
    started = time.monotonic()
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)], stderr=log
    )
    try:
        if not online.wait(30):
            print("demo: the agent did not come online; see demo-output/agent.log", file=sys.stderr)
            return 1
        print(f"      agent online after {time.monotonic() - started:.2f}s (log: {OUT}/agent.log)")
        step("4/5 replaying the day's 1440 readings at 300/s; alerts as they arrive upstream:")
        readings = readings_from_csv(OUT / "live.csv")
        replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/{ASSET}", rate=300)
        stats = wait_for_agent(OUT / "agent-data", len(readings))
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=30)
        alerts.close()
        status.disconnect()
        status.loop_stop()
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


def wait_for_agent(data_dir: Path, expected: int, timeout: float = 60.0) -> dict:
    """Until every reading is stored and every alert acknowledged upstream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (data_dir / "agent.db").exists():
            store = open_existing(data_dir)
            stats = store.stats()
            store.close()
            if (
                stats["readings"] + stats["dead_letters"] >= expected
                and not stats["alerts_pending"]
            ):
                return stats
        time.sleep(0.2)
    raise TimeoutError(f"the agent did not store {expected} readings within {timeout}s")


def summarize(
    alerts: list[dict], faults: list[Fault], stamps: list[str], stats: dict, code: int
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
