"""What every benchmark case needs: models, brokers, the agent as a process, its numbers.

The agent runs exactly as on a gateway (`python -m agent run`), optionally pinned to one core
with `taskset` to estimate a slower board; the brokers are real mosquitto on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.readings import count_readings
from fleet.mqtt import connect
from testbed.mosquitto import Mosquitto
from trainer.simulate import simulate, write_csv
from trainer.train import TrainOptions, TrainResult, train, write_model

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "gw-bench"
# The shipped gateway broker's queue settings; not its listener and logins (the agent and the
# paho ceiling run anonymously here, so the ACL's per-message cost is left out of both).
GATEWAY_TUNING = tuple(
    line.split("#")[0].strip()
    for line in (ROOT / "mosquitto" / "edge-gateway.conf").read_text().splitlines()
    if line.split("#")[0].strip()
    and not line.startswith(("listener", "allow_anonymous", "password_file", "acl_file"))
)


@dataclass(frozen=True)
class Models:
    train_csv: Path
    trained: dict[str, TrainResult]
    paths: dict[str, Path]


def build_models(folder: Path, algorithms: tuple[str, ...]) -> Models:
    """Every shipped algorithm, trained on the same simulated pump data."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = write_csv(folder / "train.csv", *simulate(4000, [], seed=1))
    trained, paths = {}, {}
    for algorithm in algorithms:
        result = train(csv, TrainOptions(algorithm=algorithm, model_id=f"bench_{algorithm}"))
        trained[algorithm] = result
        paths[algorithm] = write_model(result, folder / f"{algorithm}.onnx")
    return Models(csv, trained, paths)


class AgentRun:
    """`edge-agent run` on a fresh data dir between two brokers."""

    def __init__(
        self,
        folder: Path,
        local: Mosquitto,
        upstream: Mosquitto,
        model: Path,
        extra: str = "",
        core: int | None = None,
        device: str = DEVICE,
    ) -> None:
        self.folder = folder
        self.data_dir = folder / "agent-data"
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "agent.toml"
        self.config.write_text(
            f'log_level = "warning"\n[device]\nid = "{device}"\n'
            f"[local]\nport = {local.port}\n[upstream]\nport = {upstream.port}\n"
            f'[model]\npath = "{model}"\n[storage]\ndata_dir = "{self.data_dir}"\n' + extra
        )
        self.core = core
        self.upstream = upstream
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> AgentRun:
        command = [sys.executable, "-m", "agent", "run", "--config", str(self.config)]
        if self.core is not None:
            command = ["taskset", "-c", str(self.core), *command]
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=ROOT, stderr=(self.folder / "agent.log").open("ab")
        )
        return self

    def stored(self) -> int:
        """Readings committed so far (a sum over one row per batch: cheap enough to poll
        while the agent writes)."""
        db = self.data_dir / "agent.db"
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                return count_readings(conn)
        except sqlite3.OperationalError:  # created but no schema yet
            return 0

    def peak_rss_mib(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def stop(self) -> None:
        """SIGTERM and wait; an agent that does not stop is killed (so that no process is left
        holding the bench's output open) and reported."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"the agent ignored SIGTERM for 60 s: {self.folder}") from None


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01
) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def status_watch(upstream: Mosquitto) -> tuple[threading.Event, Callable[[], None]]:
    """An event set at the first retained `online` status; and a function that closes it."""
    online = threading.Event()

    def on_message(_c: object, _u: object, msg: object) -> None:
        if json.loads(msg.payload).get("state") == "online":
            online.set()

    client = connect(
        "127.0.0.1", upstream.port, subscribe=f"edge/{DEVICE}/status", on_message=on_message
    )

    def close() -> None:
        client.disconnect()
        client.loop_stop()

    return online, close


def brokers(folder: Path) -> tuple[Mosquitto, Mosquitto]:
    """The gateway's broker with the shipped config, and an upstream one."""
    if folder.exists():
        shutil.rmtree(folder)
    local = Mosquitto(folder / "local", tuning=GATEWAY_TUNING, persistence=False).start()
    return local, Mosquitto(folder / "upstream").start()


def machine() -> str:
    """The CPU the figures were taken on, for the report."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{os.cpu_count()} cores"
