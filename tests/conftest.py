"""Shared fixtures: real mosquitto brokers, generated data, trained models, the agent process."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.store import open_existing
from fleet.mqtt import connect
from testbed.mosquitto import Mosquitto, find_mosquitto
from trainer.simulate import Fault, simulate, write_csv
from trainer.train import TrainOptions, TrainResult, train, write_model

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DEVICE = "gw-test"


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


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `condition` until it is truthy; fail the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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


class AgentProcess:
    """`edge-agent run` as a subprocess, with helpers to watch its SQLite buffer."""

    def __init__(
        self,
        config: Path,
        data_dir: Path,
        upstream_port: int,
        log: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.log = log
        self.upstream_port = upstream_port
        self._log_start = log.stat().st_size if log.exists() else 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config), *args],
            stderr=log.open("a"),  # restarts append: the whole story stays in one file
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )

    def stats(self) -> dict:
        if not (self.data_dir / "agent.db").exists():
            return {}
        store = open_existing(self.data_dir)
        try:
            return store.stats()
        finally:
            store.close()

    def wait_stored(self, count: int, timeout: float = 60) -> dict:
        return wait_for(
            lambda: (s := self.stats()) and s["readings"] + s["dead_letters"] >= count and s,
            timeout,
            f"{count} readings stored ({self.stats()}); agent log {self.log}",
        )

    def logged(self, text: str) -> int:
        """How many of this process's log lines contain `text`."""
        with self.log.open("rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace").count(text)

    def wait_logged(self, text: str, count: int = 1, timeout: float = 30) -> None:
        wait_for(lambda: self.logged(text) >= count, timeout, f"{text!r} x{count} in {self.log}")

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no VmHWM for {self.process.pid}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: no clean-up, no offline status, as in a crash."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def launch_agent(
    folder: Path,
    local: Mosquitto,
    upstream: Mosquitto,
    model: Path,
    extra: str = "",
    data_dir: Path | None = None,
    local_keys: str = "",
    upstream_keys: str = "",
    env: dict[str, str] | None = None,
    device: str = DEVICE,
    args: tuple[str, ...] = (),
) -> AgentProcess:
    """`edge-agent run` on `folder/agent.toml` (and command-line `args`); launching again on
    a folder is a restart.

    `local_keys` / `upstream_keys` are TOML lines for those sections; one that sets `port`
    replaces the broker's plain port (a TLS listener, say). The test still watches the status
    on `upstream.port`."""
    data_dir = data_dir or folder / "agent-data"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "agent.toml"
    local_port = "" if "port =" in local_keys else f"port = {local.port}\n"
    upstream_port = "" if "port =" in upstream_keys else f"port = {upstream.port}\n"
    config.write_text(
        f'[device]\nid = "{device}"\n'
        f"[local]\n{local_port}{local_keys}\n[upstream]\n{upstream_port}{upstream_keys}\n"
        f'[model]\npath = "{model}"\n[storage]\ndata_dir = "{data_dir}"\n' + extra
    )
    return AgentProcess(config, data_dir, upstream.port, folder / "agent.log", env, args)


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


def wait_status(
    port: int,
    state: str,
    device: str = DEVICE,
    timeout: float = 30,
    where: Callable[[dict], bool] = lambda _status: True,
) -> dict:
    """Until the device's status upstream has `state` (and passes `where`); returns it."""
    found: dict = {}
    seen = threading.Event()

    def on_message(_c: object, _u: object, msg: object) -> None:
        status = json.loads(msg.payload)
        if status.get("state") == state and where(status):
            found.update(status)
            seen.set()

    client = connect("127.0.0.1", port, subscribe=f"edge/{device}/status", on_message=on_message)
    try:
        assert seen.wait(timeout), f"{device} did not report {state!r} within {timeout}s"
    finally:
        client.disconnect()
        client.loop_stop()
    return found


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
