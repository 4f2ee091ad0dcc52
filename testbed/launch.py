"""The agent started as a user starts it, for the tests, the bench and the demo.

`configure_agent` writes `agent.toml` for a folder and two brokers; `AgentProcess.start` runs
`python -m agent run` on it (pinned to a core with `taskset` when asked: the bench's estimate
of a slower board). The waits poll a condition until a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.readings import count_readings
from agent.store import open_existing
from fleet.mqtt import connect
from testbed.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "gw-test"  # the tests' device id; the bench and the demo name their own

T = TypeVar("T")


class WaitTimedOut(TimeoutError, AssertionError):
    """A wait that ran out of time: a TimeoutError to the bench and the demo, and a failed
    assertion to pytest (a test may catch it as one to add what it saw)."""


def wait_for(condition: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll `condition` until it is truthy and return it; after `timeout` s, fail naming
    `what`. The condition is checked once more after the deadline has passed."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
    return value


class AgentProcess:
    """`edge-agent run` on one config as a subprocess, with helpers to watch its SQLite buffer.

    Its log (stderr) is appended to, so restarts tell the whole story in one file."""

    def __init__(
        self,
        config: Path,
        data_dir: Path,
        log: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        core: int | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.log = log
        self.env = env
        self.args = args
        self.core = core
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.perf_counter() just before the process was started
        self._log_start = 0

    def start(self) -> AgentProcess:
        """Start the process (again, after `stop`: a restart on the same folder)."""
        config = str(self.config.absolute())  # the process runs in the repository's root
        command = [sys.executable, "-m", "agent", "run", "--config", config, *self.args]
        if self.core is not None:
            command = ["taskset", "-c", str(self.core), *command]
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        env = {**os.environ, **self.env} if self.env else None
        self.started_at = time.perf_counter()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,  # `run` writes nothing there; its log is stderr
                stderr=log,
                cwd=ROOT,
                env=env,
            )
        return self

    def stats(self) -> dict:
        """`edge-agent buffer stats` of its database; empty before the database exists."""
        if not (self.data_dir / "agent.db").exists():
            return {}
        store = open_existing(self.data_dir)
        try:
            return store.stats()
        finally:
            store.close()

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

    def wait_stored(self, count: int, timeout: float = 60) -> dict:
        """Until `count` readings are stored or dead-lettered; returns the stats."""
        try:
            return wait_for(
                lambda: (s := self.stats()) and s["readings"] + s["dead_letters"] >= count and s,
                timeout,
                f"{count} readings stored",
            )
        except WaitTimedOut as exc:  # say what was stored when it gave up, not when it began
            raise WaitTimedOut(f"{exc} (at the end: {self.stats()}); log {self.log}") from None

    def logged(self, text: str) -> int:
        """How many of this run's log lines contain `text`."""
        with self.log.open("rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace").count(text)

    def wait_logged(self, text: str, count: int = 1, timeout: float = 30) -> None:
        wait_for(lambda: self.logged(text) >= count, timeout, f"{text!r} x{count} in {self.log}")

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), MiB."""
        assert self.process is not None, "the agent was never started"
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for {self.process.pid}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and its exit code; an agent that does not stop is killed (so that no process
        is left holding its files) and reported. None if it was never started."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"the agent ignored SIGTERM for {timeout} s and was killed: {self.log}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no offline status, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def configure_agent(
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
    top: str = "",
    core: int | None = None,
) -> AgentProcess:
    """Write `folder/agent.toml` and return the agent for it, not yet started.

    `model` and `data_dir` (default `folder/agent-data`) are written as given: a relative path
    is relative to the config's folder, as for any user. `top` holds top-level keys (before the
    first table), `extra` whole tables after the storage one. `local_keys` / `upstream_keys`
    are TOML lines for those sections; one that sets `port` replaces the broker's plain port
    (a TLS listener, say)."""
    data_dir = data_dir or folder / "agent-data"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "agent.toml"
    local_port = "" if "port =" in local_keys else f"port = {local.port}\n"
    upstream_port = "" if "port =" in upstream_keys else f"port = {upstream.port}\n"
    config.write_text(
        f'{top}[device]\nid = "{device}"\n'
        f"[local]\n{local_port}{local_keys}\n[upstream]\n{upstream_port}{upstream_keys}\n"
        f'[model]\npath = "{model}"\n[storage]\ndata_dir = "{data_dir}"\n' + extra
    )
    return AgentProcess(config, folder / data_dir, folder / "agent.log", env, args, core)


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
    """`configure_agent` and start: `edge-agent run` on `folder/agent.toml` (and command-line
    `args`); launching again on a folder is a restart."""
    return configure_agent(
        folder,
        local,
        upstream,
        model,
        extra,
        data_dir,
        local_keys,
        upstream_keys,
        env,
        device,
        args,
    ).start()


class StatusWatch:
    """A device's status topic upstream, subscribed until `close`: `seen` is set at the first
    status that `accept` takes, and `found` holds it. Subscribe before starting the agent to
    time its start-up; the status is retained, so a later watch sees the current one."""

    def __init__(self, port: int, device: str, accept: Callable[[dict], bool]) -> None:
        self.seen = threading.Event()
        self.found: dict = {}

        def on_message(_c: object, _u: object, msg: object) -> None:
            status = json.loads(msg.payload)
            if accept(status):
                self.found.update(status)
                self.seen.set()

        self._client = connect(
            "127.0.0.1", port, subscribe=f"edge/{device}/status", on_message=on_message
        )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_status(
    port: int,
    state: str,
    device: str = DEVICE,
    timeout: float = 30,
    where: Callable[[dict], bool] = lambda _status: True,
) -> dict:
    """Until the device's status upstream has `state` (and passes `where`); returns it."""
    watch = StatusWatch(port, device, lambda s: s.get("state") == state and where(s))
    try:
        if not watch.seen.wait(timeout):
            raise WaitTimedOut(f"{device} did not report {state!r} within {timeout}s")
    finally:
        watch.close()
    return watch.found
