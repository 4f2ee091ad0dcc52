"""Shared fixtures: real mosquitto brokers, generated data, trained models, the agent process."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The launcher, the waits and the device id are the testbed's, shared with the bench and the
# demo; the tests import them from here (`as`: re-exported).
from testbed.launch import DEVICE as DEVICE
from testbed.launch import AgentProcess as AgentProcess
from testbed.launch import launch_agent as launch_agent
from testbed.launch import wait_for as wait_for
from testbed.launch import wait_status as wait_status
from testbed.mosquitto import Mosquitto, find_mosquitto
from trainer.simulate import Fault, simulate, write_csv
from trainer.train import TrainOptions, TrainResult, train, write_model

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
SYSTEM_TESTS = ROOT / "tests" / "system"
# A test that asks for one of these starts a whole process against brokers, wherever it lives.
SYSTEM_FIXTURES = frozenset({"start_agent", "follow_alerts"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark whole-process tests `system`, so that `pytest -m "not system"` is a quick loop.

    Everything in tests/system/ is one; so is a unit-folder test that starts the agent or the
    alerts CLI through a fixture (a file there that is mostly unit tests keeps such a test
    beside them, and new ones are caught without anyone remembering the marker)."""
    for item in items:
        in_folder = item.path.is_relative_to(SYSTEM_TESTS)
        if in_folder or SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A console script as users run it: `python -m <package> ...` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Factory for private brokers on free loopback ports, all stopped at teardown."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    started: list[Mosquitto] = []

    def start(name: str = "broker", persistence: bool = False) -> Mosquitto:
        b = Mosquitto(tmp_path / name, persistence=persistence).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def follow_alerts() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """`edge-fleet alerts --broker ADDRESS ARGS…` as a user runs it, returned once it says it is
    subscribed (from then on no alert is missed); killed at teardown if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(address: str, *args: str) -> subprocess.Popen[str]:
        cli = subprocess.Popen(
            [sys.executable, "-m", "fleet", "alerts", "--broker", address, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started.append(cli)
        assert cli.stderr is not None
        assert "following alerts" in cli.stderr.readline(), "the CLI says when it is subscribed"
        return cli

    yield start
    for cli in started:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()


@dataclass(frozen=True)
class SimData:
    train_csv: Path
    live_csv: Path
    faults: list[Fault]


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory: pytest.TempPathFactory) -> SimData:
    folder = tmp_path_factory.mktemp("sim")
    train_csv = write_csv(folder / "train.csv", *simulate(3000, [], seed=1))
    stamps, values, faults = simulate(1000, ["spike", "drift", "stuck", "noise"], seed=5)
    return SimData(train_csv, write_csv(folder / "live.csv", stamps, values, faults), faults)


@pytest.fixture(scope="session")
def trained(sim_data: SimData) -> TrainResult:
    # The agent tests were written against this model (PCA, window 10): pinned, not the default.
    return train(
        sim_data.train_csv, TrainOptions(algorithm="pca", window=10, model_id="test_pump", seed=3)
    )


@pytest.fixture(scope="session")
def model_path(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(trained, tmp_path_factory.mktemp("model") / "test_pump.onnx")


@pytest.fixture
def start_agent(tmp_path: Path, model_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(
        local: Mosquitto,
        upstream: Mosquitto,
        extra: str = "",
        model: Path | None = None,
        data_dir: Path | None = None,
        local_keys: str = "",
        upstream_keys: str = "",
        env: dict[str, str] | None = None,
    ) -> AgentProcess:
        agent = launch_agent(
            tmp_path,
            local,
            upstream,
            model or model_path,
            extra,
            data_dir,
            local_keys,
            upstream_keys,
            env,
        )
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.kill()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real file system that really fills up (needs mount rights)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(folder: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = folder / "ballast"
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return ballast
