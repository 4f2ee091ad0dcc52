"""Private mosquitto brokers on free loopback ports, for the tests, the bench and the demo.

Each broker gets its own config and folder; it is stopped by its PID. With `persistence`, the
broker keeps sessions and queued messages across a restart on the same port, as a real
upstream broker would.
"""

from __future__ import annotations

import getpass
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str | None:
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, and the kernel gives those to outgoing client
    connections too: a broker restarted on its old port could find a client holding it.
    """
    low = _ephemeral_low()
    for port in random.sample(range(low // 2, low), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise BrokerError(f"no free loopback port in {low // 2}-{low - 1}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@dataclass
class Mosquitto:
    workdir: Path
    port: int = field(default_factory=free_port)
    persistence: bool = False
    # Queue limits etc.; the default keeps a slow test subscriber from losing messages.
    tuning: tuple[str, ...] = ("max_queued_messages 100000",)
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            *self.tuning,
            # Started as root, mosquitto would switch to user `mosquitto` and lose its folder.
            f"user {getpass.getuser()}",
            f"persistence {str(self.persistence).lower()}",
        ]
        if self.persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 1"]
        conf.write_text("\n".join(lines) + "\n")
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self.process.returncode}; "
                    f"see {self.workdir}/mosquitto.log"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
