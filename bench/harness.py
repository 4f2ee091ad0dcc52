"""What every benchmark case needs: models, brokers, the agent as a process, its numbers.

The agent runs exactly as on a gateway (`python -m agent run`, started by the testbed's
launcher), optionally pinned to one core with `taskset` to estimate a slower board; the brokers
are real mosquitto on loopback.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed.launch import AgentProcess, StatusWatch, configure_agent, wait_for
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


def agent_run(
    folder: Path,
    local: Mosquitto,
    upstream: Mosquitto,
    model: Path,
    extra: str = "",
    core: int | None = None,
    device: str = DEVICE,
) -> AgentProcess:
    """`edge-agent run` on a fresh data dir between two brokers, logging warnings only; not
    started yet (`.start()`), so that a watch can subscribe first."""
    top = 'log_level = "warning"\n'
    return configure_agent(folder, local, upstream, model, extra, device=device, top=top, core=core)


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, poll: float = 0.01
) -> None:
    """The bench's waits poll every 10 ms unless told: a timing is taken when its wait ends."""
    wait_for(condition, timeout, what, poll)


def status_watch(upstream: Mosquitto) -> tuple[threading.Event, Callable[[], None]]:
    """An event set at the first retained `online` status; and a function that closes it."""
    watch = StatusWatch(upstream.port, DEVICE, lambda status: status.get("state") == "online")
    return watch.seen, watch.close


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
